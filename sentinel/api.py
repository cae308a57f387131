"""The daemon's HTTP API (DESIGN.md): health, metrics, runs, reports and incidents.

Mutating requests need ``Authorization: Bearer <token>`` (the token from the env var named by
``api.token_env`` or the file ``api.token_file``; the scheme is case-insensitive, RFC 7235); with no
token configured they are refused. Reads are open unless ``api.public_reads`` is false. Every error,
including unknown routes, bad parameters and internal errors, is ``{"error": {"code", "message"}}``.

Limits (``RequestGuard``, a pure ASGI middleware in front of everything): the token is checked
before a byte of the body is read, and a body larger than ``api.max_body_bytes`` is refused with
413 (by its Content-Length at once, or counted while a chunked body streams in), so no request can
make the daemon hold more than that in memory. Ids outside the id columns' range are 404.
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ApiConfig, read_secret
from .errors import NotFoundError, StateError
from .redact import SECRETS

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
    """Pure ASGI middleware: authentication and the body limit, before the app reads anything.

    ``token()`` returns the configured token (or None: mutations are then refused with 403).
    Mutating methods always need it; reads under ``/api/`` need it unless ``public_reads``. The
    body is then read here, at most ``max_body_bytes`` of it (Content-Length is checked first; a
    chunked body is counted as it arrives), and replayed to the app. Every refusal is the JSON
    error shape with ``Connection: close``: the unread rest of the body is never received.
    """

    def __init__(self, app: Asgi, *, token: Callable[[], str | None], token_hint: str, public_reads: bool,
                 max_body_bytes: int):
        self.app, self.token, self.token_hint = app, token, token_hint
        self.public_reads, self.max_body_bytes = public_reads, max_body_bytes

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self._authorise(scope, headers)
            body = await self._read_body(headers, receive)
        except _Refused as exc:
            await _send_refusal(send, exc)
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorise(self, scope: dict, headers: dict[str, str]) -> None:
        method, path = scope.get("method", "GET").upper(), scope.get("path", "")
        if method not in MUTATING and (self.public_reads or not path.startswith("/api/")):
            return
        expected = self.token()
        if not expected:
            raise _Refused(403, "forbidden", f"no API token configured (set {self.token_hint})")
        got = bearer_token(headers.get("authorization"))
        if got is None or not hmac.compare_digest(got.encode(), expected.encode()):
            raise _Refused(401, "unauthorized", "missing or wrong bearer token")

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
    """Every error in the documented shape, whoever raised it."""
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(NotFoundError)
    async def _not_found(_req: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(error_body("not_found", str(exc)), status_code=404)

    @app.exception_handler(StateError)
    async def _state(_req: Request, exc: StateError) -> JSONResponse:
        return JSONResponse(error_body("conflict", str(exc)), status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        return JSONResponse(error_body("invalid_request", f"{where}: {first.get('msg', 'invalid')}{more}"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(_req: Request, _exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so uvicorn logs the traceback (as JSON, through
        # Sentinel's handler); the client gets no detail, which may hold anything
        return JSONResponse(error_body("internal", "internal error; the daemon's log has the details"), status_code=500)


class Control(Protocol):
    """What the API needs of the process serving it, beyond the ``App`` (sentinel/app.py): the
    daemon (``sentinel.daemon.Daemon``) is one. ``health`` is None until the daemon built it."""
    state: Any                 # an enum whose .value is starting/started/stopping/stopped
    health: Any                # sentinel.health.Health (``report()`` is what /readyz serves) or None

    def next_run_times(self) -> dict[str, dt.datetime | None]: ...

    def revalidate(self, pair: str, trigger: str = "manual") -> Any: ...


def create_app(app: Any, control: Control | None = None) -> FastAPI:
    """The API over ``app`` (a ``sentinel.app.App``: cfg, store, pairs, incidents, metrics) and
    ``control`` (the running daemon; default: ``app`` itself, for stand-ins that carry both): the
    routes behind ``RequestGuard`` (added as the outermost app middleware, so it runs before
    routing and before any body is read)."""
    cfg = app.cfg
    api = FastAPI(title="Sentinel", version="1", docs_url="/docs", redoc_url=None,
                  dependencies=[Depends(ids_in_range)])
    _install_error_handlers(api)

    def token() -> str | None:
        value = read_secret(cfg.api.token_env, cfg.api.token_file)
        SECRETS.add(value)
        return value

    token()
    _routes(api, app, app if control is None else control)
    api.add_middleware(RequestGuard, token=token, token_hint=f"{cfg.api.token_env} or api.token_file",
                       public_reads=cfg.api.public_reads,
                       # stand-in configs (tests, embedders) without the key get the documented default
                       max_body_bytes=getattr(cfg.api, "max_body_bytes", ApiConfig.model_fields["max_body_bytes"].default))
    return api


def _actor(req: Request) -> str:
    return req.headers.get("x-sentinel-actor", "api")


def _routes(api: FastAPI, app: Any, control: Control) -> None:
    _health_routes(api, app, control)
    _run_routes(api, app, control)
    _incident_routes(api, app)
    _silence_routes(api, app)


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

    @api.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _run_routes(api: FastAPI, app: Any, control: Control) -> None:
    cfg = app.cfg

    @api.get("/api/v1/pairs")
    def pairs(req: Request) -> dict[str, Any]:
        nxt = control.next_run_times()
        return {"pairs": [{"name": name, "classes": p.classes, "critical_classes": p.critical_classes,
                           "models": p.hashes, "pending_samples": app.store.pending_count(name),
                           "next_run": nxt.get(name).isoformat() if nxt.get(name) else None}
                          for name, p in app.pairs.items()]}

    @api.get("/api/v1/runs")
    def runs(req: Request, pair: str | None = None, limit: int = 50) -> dict[str, Any]:
        return {"runs": app.store.list_runs(pair=pair, limit=max(1, min(limit, 1000)))}

    @api.get("/api/v1/runs/{run_id}")
    def run(req: Request, run_id: int) -> dict[str, Any]:
        r = app.store.get_run(run_id)
        if r is None:
            raise NotFoundError("run", run_id)
        return r

    @api.get("/api/v1/runs/{run_id}/report")
    def report(req: Request, run_id: int) -> FileResponse:
        r = app.store.get_run(run_id)
        if r is None:
            raise NotFoundError("run", run_id)
        if not r.get("report_path") or not Path(r["report_path"]).exists():
            raise ApiError(404, "not_found", f"run {run_id} has no report file")
        return FileResponse(r["report_path"], media_type="text/html")

    @api.post("/api/v1/runs")
    def revalidate(req: Request, pair: str | None = None) -> JSONResponse:
        names = [pair] if pair else sorted(app.pairs)
        unknown = [n for n in names if n not in app.pairs]
        if unknown:
            raise ApiError(404, "not_found", f"no pair {unknown[0]!r}; pairs are {sorted(app.pairs)}")
        out = []
        for name in names:
            o = control.revalidate(name, trigger="api")
            out.append({"pair": name, "run_id": o.run_id if o else None, "status": o.status if o else "skipped"})
        return JSONResponse({"runs": out}, status_code=201)

    @api.post("/api/v1/runs/{run_id}/accept")
    def accept(req: Request, run_id: int, body: Any = Body(None)) -> dict[str, Any]:
        """{"reason": "..."}: accept the run's performance as the new normal (docs/performance.md)."""
        from .perf.accepted import accept_run, kept_models

        if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"reason": "..."}')
        kept = kept_models(cfg)
        try:
            return accept_run(app.store, run_id, actor=_actor(req), reason=body["reason"], kept=kept)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None


def _incident_routes(api: FastAPI, app: Any) -> None:
    @api.get("/api/v1/incidents")
    def incidents(req: Request, state: str | None = None, pair: str | None = None, limit: int = 100) -> dict[str, Any]:
        return {"incidents": app.incidents.list(state=state, pair=pair, limit=max(1, min(limit, 1000)))}

    @api.get("/api/v1/incidents/{incident_id}")
    def incident(req: Request, incident_id: int) -> dict[str, Any]:
        return app.incidents.get(incident_id)

    def note_of(body: Any) -> str | None:
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"note": "..."}')
        return body.get("note") or None

    @api.post("/api/v1/incidents/{incident_id}/ack")
    def ack(req: Request, incident_id: int, body: Any = Body(None)) -> dict[str, Any]:
        app.incidents.ack(incident_id, _actor(req), note=note_of(body))
        return app.incidents.get(incident_id)

    @api.post("/api/v1/incidents/{incident_id}/resolve")
    def resolve(req: Request, incident_id: int, body: Any = Body(None)) -> dict[str, Any]:
        app.incidents.resolve(incident_id, _actor(req), note=note_of(body))
        return app.incidents.get(incident_id)


def _silence_routes(api: FastAPI, app: Any) -> None:
    # Silences: {"matchers": ["pair=triage", "check=~decision_.*"], "duration": "2h", "author": "alice",
    # "reason": "retraining"}; the author defaults to the X-Sentinel-Actor header.
    @api.get("/api/v1/silences")
    def silences(req: Request, all: bool = False) -> dict[str, Any]:  # noqa: A002 - the query parameter's name
        return {"silences": app.incidents.silences(active_only=not all)}

    @api.post("/api/v1/silences")
    def silence(req: Request, body: Any = Body(None)) -> JSONResponse:
        from .durations import parse_duration
        from .incidents.matchers import parse_matcher

        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "body must be a JSON object with matchers, duration, reason")
        unknown = sorted(set(body) - {"matchers", "duration", "author", "reason"})
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; fields are matchers, duration, author, reason")
        try:
            raw = body.get("matchers") or []
            if not isinstance(raw, list):
                raise ValueError("matchers must be a list of strings like \"pair=triage\"")
            matchers = [parse_matcher(str(m)) for m in raw]
            duration = parse_duration(body.get("duration")) if body.get("duration") is not None else None
            created = app.incidents.add_silence(matchers, author=str(body.get("author") or _actor(req)),
                                                   reason=str(body.get("reason") or ""), duration=duration)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return JSONResponse(jsonable(created), status_code=201)

    @api.delete("/api/v1/silences/{silence_id}")
    def expire(req: Request, silence_id: int) -> dict[str, Any]:
        return app.incidents.expire_silence(silence_id, _actor(req))
