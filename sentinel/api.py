"""The daemon's HTTP API (DESIGN.md): health, metrics, runs, reports and incidents; the web
console (``sentinel.console``) is served by the same app.

Who is asking (``sentinel.users``): ``Authorization: Bearer <token>`` names a user from the users
file or env, or the shared token of older deployments (``api.token_env`` / ``api.token_file``),
an ``admin``; the scheme is case-insensitive (RFC 7235). Mutating API requests need a user, and
each route needs a role (``need``): 401 without a known token, 403 with one whose role may not.
Reads are open unless ``api.read_access`` is ``authenticated``. The console signs people in with
a token into a signed session cookie (``sentinel.console.sessions``). Every error, including
unknown routes, bad parameters (400) and internal errors, is ``{"error": {"code", "message"}}``.

Limits (``RequestGuard``, a pure ASGI middleware in front of everything): the token is checked
before a byte of the body is read, and a body larger than ``api.max_body_bytes`` is refused with
413 (by its Content-Length at once, or counted while a chunked body streams in), so no request can
make the daemon hold more than that in memory. Ids outside the id columns' range are 404.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Awaitable, Callable, Literal, Protocol

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_gate import READ_ONLY_POSTS, register_gate_routes
from .config import ApiConfig, ConfigError, read_secret
from .errors import NotFoundError, StateError
from .incidents.silences import MAX_SILENCE_SECONDS
from .links import Links
from .redact import SECRETS
from .users import PERMISSIONS, User, Users, roles_for

IncidentState = Literal["open", "acknowledged", "resolved", "silenced"]
Severity = Literal["warning", "high", "critical"]

#: Methods that change something: they always need the token.
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Run, incident and silence ids are ``Integer`` columns: 32-bit on PostgreSQL, which raises for a
#: larger parameter (a 500) where the answer is simply "no such id".
MAX_ID = 2**31 - 1
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 422: "invalid_request"}

Asgi = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def jsonable(obj: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(obj)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def bearer_token(header: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header (any case of ``Bearer``)."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def ids_in_range(request: Request) -> None:
    """App-wide dependency: an integer ``{..._id}`` path parameter that no row can have (outside
    1..MAX_ID, negative included) is 404 here, before it reaches a database that would raise on
    it. Non-integers are left to validation (422)."""
    for name, raw in request.path_params.items():
        text = str(raw).strip()
        if name.endswith("_id") and text.lstrip("+-").isdigit() and text.isascii():
            if len(text) > 20 or not 1 <= int(text) <= MAX_ID:
                raise NotFoundError(name[:-3], int(text) if len(text) <= 40 else text[:40] + "...")


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


class RequestGuard:
    """Pure ASGI middleware: who is asking, and the body limit, before the app reads anything.

    Under ``/api/``: a bearer token must name a user (``users.authenticate``; a wrong one is 401
    at once); mutating methods need one, and so do reads unless ``reads_open``. The user found
    is put in ``scope["state"]["user"]`` for the routes' role checks (``need``); console pages
    (outside ``/api/``) check their session cookie themselves. The body is then read here, at
    most ``max_body_bytes`` of it (Content-Length is checked first; a chunked body is counted as
    it arrives), and replayed to the app. Every refusal is the JSON error shape with
    ``Connection: close``: the unread rest of the body is never received.
    """

    def __init__(self, app: Asgi, *, users: Users, token_hint: str, reads_open: bool, max_body_bytes: int):
        self.app, self.users, self.token_hint = app, users, token_hint
        self.reads_open, self.max_body_bytes = reads_open, max_body_bytes

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            scope.setdefault("state", {})["user"] = self._authorise(scope, headers)
            body = await self._read_body(headers, receive)
        except _Refused as exc:
            await _send_refusal(send, exc)
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorise(self, scope: dict, headers: dict[str, str]) -> User | None:
        method, path = scope.get("method", "GET").upper(), scope.get("path", "")
        if not path.startswith("/api/"):
            return None
        given = headers.get("authorization")
        user = self.users.authenticate(bearer_token(given))
        # a rollout gate's POST (Flagger's webhook) only reads: open like any read
        writes = method in MUTATING and not (method == "POST" and path in READ_ONLY_POSTS)
        needed = writes or not self.reads_open
        if user is None and (needed or given):
            if not self.users.configured():
                raise _Refused(403, "forbidden", f"no API token or users configured (set {self.token_hint})")
            raise _Refused(401, "unauthorized", "missing or wrong bearer token")
        return user

    async def _read_body(self, headers: dict[str, str], receive: Callable[[], Awaitable[dict]]) -> bytes:
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit() or len(declared.strip()) > 18:
                raise _Refused(400, "bad_request", f"invalid Content-Length {declared[:40]!r}")
            if int(declared) > limit:
                raise _Refused(413, "payload_too_large", f"request body of {int(declared)} bytes is over "
                                                         f"the limit of {limit} bytes (api.max_body_bytes)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":   # the client went away
                raise _Refused(400, "bad_request", "the client disconnected before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, "payload_too_large",
                               f"request body is over the limit of {limit} bytes (api.max_body_bytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()     # http.disconnect, for whoever waits for it

    return replay


async def _send_refusal(send: Callable[[dict], Awaitable[None]], exc: _Refused) -> None:
    payload = json.dumps(error_body(exc.code, exc.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"connection", b"close")]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sentinel"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _install_error_handlers(app: FastAPI) -> None:
    """Every error in the documented shape, whoever raised it; a browser asking for a console
    page (outside ``/api/``, accepting HTML) gets the same message as the console's error page."""
    def answer(req: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        page = getattr(app.state, "html_error", None)
        if page is not None and not req.url.path.startswith("/api/") and "text/html" in req.headers.get("accept", ""):
            return page(req, status, message)
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(req: Request, exc: ApiError) -> Response:
        return answer(req, exc.status, exc.code, exc.message)

    @app.exception_handler(NotFoundError)
    async def _not_found(req: Request, exc: NotFoundError) -> Response:
        return answer(req, 404, "not_found", str(exc))

    @app.exception_handler(StateError)
    async def _state(req: Request, exc: StateError) -> Response:
        return answer(req, 409, "conflict", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError) -> Response:
        # 400, not FastAPI's 422: a bad query value or body is the client's bad request
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        return answer(req, 400, "bad_request", f"{where}: {first.get('msg', 'invalid')}{more}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:   # Starlette names the first matching route's methods only
            headers["Allow"] = ", ".join(_allowed(app, req.scope))
        return answer(req, exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _internal(req: Request, _exc: Exception) -> Response:
        # Starlette re-raises after this response, so uvicorn logs the traceback (as JSON, through
        # Sentinel's handler); the client gets no detail, which may hold anything
        return answer(req, 500, "internal", "internal error; the daemon's log has the details")


def _allowed(app: FastAPI, scope: dict) -> list[str]:
    """Every method some route serves at this path (what a 405's ``Allow`` must list)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        if route.matches({**scope, "method": "GET"})[0] != Match.NONE or route.matches(
                {**scope, "method": "POST"})[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


class Control(Protocol):
    """What the API needs of the process serving it, beyond the ``App`` (sentinel/app.py): the
    daemon (``sentinel.daemon.Daemon``) is one. ``health`` is None until the daemon built it."""
    state: Any                 # an enum whose .value is starting/started/stopping/stopped
    health: Any                # sentinel.health.Health (``report()`` is what /readyz serves) or None

    def next_run_times(self) -> dict[str, dt.datetime | None]: ...

    def revalidate(self, pair: str, trigger: str = "manual") -> Any: ...


def create_app(app: Any, control: Control | None = None) -> FastAPI:
    """The API over ``app`` (a ``sentinel.app.App``: cfg, store, pairs, incidents,
    metrics) and ``control`` (the running daemon; default: ``app`` itself, for stand-ins that carry
    both): the routes behind ``RequestGuard`` (added as the outermost app middleware, so it runs
    before routing and before any body is read). ``sentinel.app.http_app`` adds the console. The
    users (``api.state.users``) and the console links (``api.state.links``) are kept on it."""
    cfg = app.cfg
    docs = bool(getattr(cfg.api, "docs", False))
    api = FastAPI(title="Sentinel", version="1", docs_url="/docs" if docs else None, redoc_url=None,
                  dependencies=[Depends(ids_in_range)])
    _install_error_handlers(api)

    def token() -> str | None:
        value = read_secret(cfg.api.token_env, cfg.api.token_file)
        SECRETS.add(value)
        return value

    token()
    users = Users.from_config(cfg, token) if hasattr(cfg, "resolve_path") else Users(shared_token=token)
    links = Links.from_config(cfg)
    api.state.users, api.state.links = users, links
    control = app if control is None else control
    _routes(api, app, control, links)
    api.openapi = lambda: _openapi(api)   # type: ignore[method-assign]
    reads_open = cfg.api.reads_open() if hasattr(cfg.api, "reads_open") else cfg.api.public_reads
    api.add_middleware(RequestGuard, users=users, token_hint=f"{cfg.api.token_env}, api.token_file or api.users_file",
                       reads_open=reads_open,
                       # stand-in configs (tests, embedders) without the key get the documented default
                       max_body_bytes=getattr(cfg.api, "max_body_bytes", ApiConfig.model_fields["max_body_bytes"].default))
    return api


_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}


def _openapi(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI document as the API behaves: errors are 400 (not FastAPI's 422) and every
    error, whatever its status, has the one error shape; API routes take a bearer token."""
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, routes=api.routes,
                         description="Sentinel's HTTP API. Errors: {\"error\": {\"code\", \"message\"}}.")
    comps = schema.setdefault("components", {})
    comps.setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    comps["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for key in ("HTTPValidationError", "ValidationError"):
        comps["schemas"].pop(key, None)
    error = {"description": "an error (400 bad request, 401, 403, 404, 409, 413, 500...)",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            op["responses"].pop("422", None)
            op["responses"]["default"] = error
            if path.startswith("/api/"):
                writes = method.upper() in MUTATING and path not in READ_ONLY_POSTS
                op["security"] = [{"bearer": []}] if writes else [{}, {"bearer": []}]
    api.openapi_schema = schema
    return schema


def current_user(req: Request) -> User | None:
    return getattr(req.state, "user", None)


def need(action: str) -> Any:
    """A route dependency: the request's user may do ``action`` (``sentinel.users.PERMISSIONS``),
    else 403 naming the roles that may."""
    assert action in PERMISSIONS

    def check(req: Request) -> User:
        user = current_user(req)
        if user is None:   # RequestGuard lets no mutating API request through without a user
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        if not user.can(action):
            raise ApiError(403, "forbidden", f"{user.name} is a {user.role}; to {action} takes the role "
                                             f"{' or '.join(roles_for(action))}")
        return user
    return Depends(check)


def actor_of(req: Request, user: User) -> str:
    """The name audited for ``user``: their own. Only the shared token (a team's old admin
    token, no person's) may name someone with ``X-Sentinel-Actor``."""
    if user.shared:
        return (req.headers.get("x-sentinel-actor") or "").strip()[:128] or user.name
    return user.name


def _routes(api: FastAPI, app: Any, control: Control, links: Links) -> None:
    _health_routes(api, app, control)
    _run_routes(api, app, control, links)
    _incident_routes(api, app, links)
    _silence_routes(api, app)
    register_gate_routes(api, app)


def _health_routes(api: FastAPI, app: Any, control: Control) -> None:
    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok", "state": control.state.value}
        replica = getattr(control, "replica", None)
        if replica is not None:   # who runs on this store, as of the last heartbeat (no store query)
            body["replica"] = replica.status()
        return body

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """503 naming each failing part with its reason (sentinel/health.py); /healthz is liveness."""
        health = getattr(control, "health", None)
        if health is None:   # before start() built it
            body = {"ready": False, "problems": [f"daemon: {control.state.value}"],
                    "parts": {"daemon": {"ok": False, "reason": f"the daemon is {control.state.value}"}}}
        else:
            body = health.report()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _json_body(schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


_TEXT = {"type": "string", "pattern": r"[^\s\u001c-\u001f\u0085]"}      # not blank (as Python's strip() sees it)
_NOTE_BODY = _json_body({"type": "object", "properties": {"note": {"type": "string"}}}, False)
_REASON_BODY = _json_body({"type": "object", "required": ["reason"], "properties": {"reason": _TEXT}}, True)
# a matcher NAME=VALUE, NAME!=VALUE or NAME=~REGEX (a REGEX that does not compile is a 400 too)
_MATCHER = r"^(pair|check|slice|severity|state)(=~|!=|=)"
_SILENCE_BODY = _json_body({
    "type": "object", "required": ["matchers", "duration", "reason"], "additionalProperties": False,
    "properties": {"matchers": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": _MATCHER}},
                   "duration": {"anyOf": [{"type": "string", "pattern": r"^[1-9][0-9]{0,3}[smhd]$|^[1-9][0-9]{0,2}w$"},
                                          {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SILENCE_SECONDS}]},
                   "author": {"type": "string"}, "reason": _TEXT}}, True)


def _run_routes(api: FastAPI, app: Any, control: Control, links: Links) -> None:
    @api.get("/api/v1/pairs")
    def pairs(req: Request) -> dict[str, Any]:
        nxt = control.next_run_times()
        return {"pairs": [{"name": name, "classes": p.classes, "critical_classes": p.critical_classes,
                           "models": p.hashes, "pending_samples": app.store.pending_count(name),
                           "next_run": nxt.get(name).isoformat() if nxt.get(name) else None,
                           "url": links.pair(name)}
                          for name, p in app.pairs.items()]}

    @api.get("/api/v1/runs")
    def runs(req: Request, pair: str | None = None, limit: int = Query(50, ge=1, le=1000),
             before: int | None = Query(None, ge=1, le=MAX_ID, description="only runs with a smaller id (the next page)")
             ) -> dict[str, Any]:
        """Run summaries, newest first (the full record is at /api/v1/runs/{id})."""
        rows = app.store.run_summaries(pair=pair, limit=limit, before=before)
        return {"runs": [links.public_run(r) for r in rows],
                "next": rows[-1]["id"] if len(rows) == limit else None}

    @api.get("/api/v1/runs/{run_id}")
    def run(req: Request, run_id: int) -> dict[str, Any]:
        r = app.store.get_run(run_id)
        if r is None:
            raise NotFoundError("run", run_id)
        return links.public_run(r)

    @api.get("/api/v1/runs/{run_id}/report", response_class=HTMLResponse)
    def report(req: Request, run_id: int) -> FileResponse:
        path = app.store.report_file(run_id)
        if path is None:
            raise ApiError(404, "not_found", f"run {run_id} has no report file")
        return FileResponse(path, media_type="text/html")

    @api.get("/api/v1/runs/{run_id}/diagnosis")
    def diagnosis(req: Request, run_id: int, candidate: str | None = None) -> dict[str, Any]:
        """Where the run's candidate diverges from its float twin, layer by layer (docs/diagnose.md):
        the stored diagnosis when the run has one, else computed now. A pair with several
        candidates: ``candidate``'s, or ``{"candidates": {name: ...}}`` with every one's."""
        return _diagnosis(app, run_id, candidate)

    @api.post("/api/v1/runs", status_code=201)
    def revalidate(req: Request, pair: str | None = None, user: User = need("revalidate")) -> JSONResponse:
        names = [pair] if pair else sorted(app.pairs)
        unknown = [n for n in names if n not in app.pairs]
        if unknown:
            raise ApiError(404, "not_found", f"no pair {unknown[0]!r}; pairs are {sorted(app.pairs)}")
        out = []
        for name in names:
            o = control.revalidate(name, trigger="api")
            out.append({"pair": name, "run_id": o.run_id if o else None, "status": o.status if o else "skipped"})
        return JSONResponse({"runs": out}, status_code=201)

    @api.post("/api/v1/runs/{run_id}/accept", openapi_extra=_REASON_BODY)
    def accept(req: Request, run_id: int, body: Any = Body(None, include_in_schema=False),
               user: User = need("approve")) -> dict[str, Any]:
        """{"reason": "..."}: accept the run's performance as the new normal (docs/performance.md)."""
        if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"reason": "..."}')
        return _accept(app, run_id, actor_of(req, user), storable(body["reason"], "reason"))


def _diagnosis(app: Any, run_id: int, candidate: str | None = None) -> dict[str, Any]:
    """The diagnosis kept in the run's record (automatic, or from the console's button), with
    ``stored`` saying who made it when; else one computed now (``stored: null``, not kept). A pair
    with several candidates: the one named, else ``{"pair", "run_id", "candidates": {name: ...}}``
    with every candidate's (each stored or computed now); 404 for a candidate it does not list."""
    from .diagnose import DiagnoseError, Diagnosis, UnknownCandidate, candidate_names, diagnose_run_candidates, sqnr_svg
    from .diagnose.auto import entries, stored
    from .revalidation import run_samples

    run = app.store.get_run(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    pc = app.cfg.pairs.get(run["pair"])
    kept = entries(stored(run))
    out: dict[str | None, dict[str, Any]] = {}
    try:
        names = [candidate] if pc is None else candidate_names(pc, candidate, pair=run["pair"])
        for name in names:
            entry = kept.get(name)
            if entry is not None and isinstance(entry.get("result"), dict):
                about = {k: entry.get(k) for k in ("by", "at", "seconds", "trigger")}
                out[name] = {**entry["result"], "svg": sqnr_svg(Diagnosis.from_dict(entry["result"])), "stored": about}
        todo = [n for n in names if n not in out]
        if todo:
            samples = run_samples(app.store, run, app.pair(run["pair"]).shape) if pc is not None else None
            got = diagnose_run_candidates(app, app.cfg, run_id, samples=samples, candidate=candidate)
            out.update({n: {**d.to_dict(), "svg": sqnr_svg(d), "stored": None} for n, d in got.items() if n in todo})
    except UnknownCandidate as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ConfigError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except DiagnoseError as exc:
        raise ApiError(409, "cannot_diagnose", str(exc)) from None   # the run and the models do not fit
    if candidate is not None or pc is None or not pc.multi:
        return out[candidate]
    return {"pair": run["pair"], "run_id": run_id, "candidates": {n: out[n] for n in names}}


def _accept(app: Any, run_id: int, actor: str, reason: str) -> dict[str, Any]:
    from .perf.accepted import accept_run, kept_models

    try:
        return accept_run(app.store, run_id, actor=actor, reason=reason, kept=kept_models(app.cfg))
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def storable(text: Any, where: str) -> Any:
    """``text`` as every store keeps it: a lone surrogate (SQLite refuses them) as ``\\udXXX``, a
    NUL (PostgreSQL refuses it) as ``\\x00`` (``where``: the field, for the reader of this code)."""
    from .storage.repository import storable_text

    return storable_text(text, len(text)) if isinstance(text, str) else text


def _incident_routes(api: FastAPI, app: Any, links: Links) -> None:
    @api.get("/api/v1/incidents")
    def incidents(req: Request, state: IncidentState | None = None, severity: Severity | None = None,
                  pair: str | None = None, limit: int = Query(100, ge=1, le=1000),
                  offset: int = Query(0, ge=0, le=10**9)) -> dict[str, Any]:
        rows, total = app.incidents.page(state=state, severity=severity, pair=pair, limit=limit, offset=offset)
        return {"incidents": [links.public_incident(i) for i in rows], "total": total}

    @api.get("/api/v1/incidents/{incident_id}")
    def incident(req: Request, incident_id: int) -> dict[str, Any]:
        return links.public_incident(app.incidents.get(incident_id))

    def note_of(body: Any) -> str | None:
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"note": "..."}')
        return storable(body.get("note"), "note") or None

    @api.post("/api/v1/incidents/{incident_id}/ack", openapi_extra=_NOTE_BODY)
    def ack(req: Request, incident_id: int, body: Any = Body(None, include_in_schema=False),
            user: User = need("respond")) -> dict[str, Any]:
        app.incidents.ack(incident_id, actor_of(req, user), note=note_of(body))
        return links.public_incident(app.incidents.get(incident_id))

    @api.post("/api/v1/incidents/{incident_id}/resolve", openapi_extra=_NOTE_BODY)
    def resolve(req: Request, incident_id: int, body: Any = Body(None, include_in_schema=False),
                user: User = need("respond")) -> dict[str, Any]:
        app.incidents.resolve(incident_id, actor_of(req, user), note=note_of(body))
        return links.public_incident(app.incidents.get(incident_id))


def add_silence(app: Any, body: dict[str, Any], author: str) -> dict[str, Any]:
    """Create a silence from an API body (matchers, duration, reason); ApiError 400 naming what is wrong."""
    from .incidents.silences import parse_silence

    try:
        matchers, duration = parse_silence(body.get("matchers"), body.get("duration"))
        return app.incidents.add_silence(matchers, author=author, reason=str(body.get("reason") or ""),
                                         duration=duration)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _silence_routes(api: FastAPI, app: Any) -> None:
    # Silences: {"matchers": ["pair=triage", "check=~decision_.*"], "duration": "2h", "reason": "retraining"};
    # the author is the signed-in user (the shared token may name one: "author" or X-Sentinel-Actor).
    @api.get("/api/v1/silences")
    def silences(req: Request, all: bool = False) -> dict[str, Any]:  # noqa: A002 - the query parameter's name
        return {"silences": app.incidents.silences(active_only=not all)}

    @api.post("/api/v1/silences", status_code=201, openapi_extra=_SILENCE_BODY)
    def silence(req: Request, body: Any = Body(None, include_in_schema=False),
                user: User = need("respond")) -> JSONResponse:
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "body must be a JSON object with matchers, duration, reason")
        unknown = sorted(set(body) - {"matchers", "duration", "author", "reason"})
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; fields are matchers, duration, author, reason")
        wrong = [k for k in ("author", "reason", "duration") if k in body and not isinstance(body[k], str)
                 and not (k == "duration" and isinstance(body[k], (int, float)) and not isinstance(body[k], bool))]
        if wrong:
            raise ApiError(400, "bad_request", f"{wrong[0]} must be a string, got {type(body[wrong[0]]).__name__}")
        body = {k: storable(v, k) for k, v in body.items()}
        author = str(body.get("author") or actor_of(req, user)) if user.shared else user.name
        return JSONResponse(jsonable(add_silence(app, body, author)), status_code=201)

    @api.delete("/api/v1/silences/{silence_id}")
    def expire(req: Request, silence_id: int, user: User = need("respond")) -> dict[str, Any]:
        return app.incidents.expire_silence(silence_id, actor_of(req, user))
