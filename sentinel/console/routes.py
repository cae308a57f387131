"""The console's routes: pages (GET) and forms (POST, each CSRF-checked, role-checked, then
redirected back: post/redirect/get)."""
from __future__ import annotations

import hmac
import inspect
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..config import read_secret
from ..errors import NotFoundError, StateError
from ..links import Links
from ..redact import SECRETS
from ..users import Users, roles_for
from . import views
from .sessions import COOKIE, LOGIN_COOKIE, Session, Sessions

TEMPLATES = Path(__file__).parent / "templates"
STATES = ("open", "acknowledged", "resolved", "silenced")
ACTIONS = {"ack": "respond", "resolve": "respond", "silence": "respond", "accept": "approve",
           "diagnose": "revalidate"}   # running a diagnosis costs what starting a revalidation does: responder and above


class Refused(Exception):
    """A console request that gets an error page: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=views.when, ago=views.ago)
    return env


class Console:
    def __init__(self, api: FastAPI, app: Any, control: Any, *, users: Users, links: Links):
        self.api, self.app, self.control, self.users, self.links = api, app, control, users, links
        cfg = app.cfg.api
        secret = read_secret(getattr(cfg, "session_secret_env", None), getattr(cfg, "session_secret_file", None))
        SECRETS.add(secret)
        self.sessions = Sessions(users, secret, hours=getattr(cfg, "session_hours", 12),
                                 secure=str(getattr(cfg, "public_url", "") or "").startswith("https://"))
        self.reads_open = cfg.reads_open() if hasattr(cfg, "reads_open") else cfg.public_reads
        self.env = _env()

    # -- plumbing --------------------------------------------------------------------------------
    def session(self, req: Request) -> Session | None:
        return self.sessions.read(req.cookies.get(COOKIE))

    def render(self, req: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s = ctx.pop("session", None) or self.session(req)
        html = self.env.get_template(template).render(session=s, links=self.links, path=req.url.path,
                                                  flash=req.query_params.get("done"), **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def page(self, fn: Callable[..., Response]) -> Callable[..., Response]:
        """A GET page: reads gated per ``api.read_access``; NotFoundError / Refused as error pages."""
        def wrapped(req: Request, **kw: Any) -> Response:
            s = self.session(req)
            if s is None and not self.reads_open:
                return RedirectResponse(f"/login?next={quote(req.url.path)}", status_code=303)
            try:
                return fn(req, s, **kw)
            except NotFoundError as exc:
                return self.render(req, "error.html", 404, session=s, message=str(exc))
            except Refused as exc:
                return self.render(req, "error.html", exc.status, session=s, message=exc.message)
        wrapped.__name__ = fn.__name__
        wrapped.__signature__ = _signature(fn, ("s",))  # type: ignore[attr-defined]
        return wrapped

    async def form(self, req: Request, action: str) -> tuple[Session, dict[str, str]]:
        """The signed-in user's form, CSRF-checked, allowed by their role; else Refused."""
        s = self.session(req)
        if s is None:
            raise Refused(401, "sign in first")
        fields = {k: v[0] for k, v in parse_qs((await req.body()).decode("utf-8", "replace")).items()}
        if not s.csrf_ok(fields.get("csrf")):
            raise Refused(403, "the form's CSRF token does not match your session: reload the page and retry")
        need = ACTIONS[action]
        if not s.user.can(need):
            raise Refused(403, f"{s.user.name} is a {s.user.role}; {action} takes the role "
                               f"{' or '.join(roles_for(need))}")
        return s, fields

    def post(self, action: str, fn: Callable[..., str]) -> Callable[..., Any]:
        """A form handler: ``fn(session, fields, **path)`` does it and returns where to go next."""
        async def wrapped(req: Request, **kw: Any) -> Response:
            try:
                s, fields = await self.form(req, action)
                return RedirectResponse(fn(s, fields, **kw), status_code=303)
            except Refused as exc:
                if exc.status == 401:
                    return RedirectResponse(f"/login?next={quote(req.url.path.rsplit('/', 1)[0])}", status_code=303)
                return self.render(req, "error.html", exc.status, message=exc.message)
            except (StateError, ValueError) as exc:
                return self.render(req, "error.html", 409 if isinstance(exc, StateError) else 400, message=str(exc))
            except NotFoundError as exc:
                return self.render(req, "error.html", 404, message=str(exc))
        wrapped.__name__ = f"console_{action}"
        wrapped.__signature__ = _signature(fn, ("s", "fields"))  # type: ignore[attr-defined]
        return wrapped

    def install(self) -> None:
        self.api.state.html_error = lambda req, status, message: self.render(req, "error.html", status, message=message)
        add = self.api.add_api_route
        for path, fn in (("/", self.overview), ("/incidents", self.incidents),
                         ("/incidents/{incident_id}", self.incident), ("/runs/{run_id}", self.run),
                         ("/runs/{run_id}/report", self.report), ("/pairs/{name}", self.pair)):
            add(path, self.page(fn), methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
        add("/login", self.login_page, methods=["GET"], include_in_schema=False)
        add("/login", self.login, methods=["POST"], include_in_schema=False)
        add("/logout", self.logout, methods=["POST"], include_in_schema=False)
        for action in ("ack", "resolve", "silence"):
            add(f"/incidents/{{incident_id}}/{action}", self.post(action, getattr(self, f"do_{action}")),
                methods=["POST"], include_in_schema=False)
        add("/runs/{run_id}/accept", self.post("accept", self.do_accept), methods=["POST"], include_in_schema=False)
        add("/runs/{run_id}/diagnose", self.post("diagnose", self.do_diagnose), methods=["POST"], include_in_schema=False)

    # -- pages -----------------------------------------------------------------------------------
    def overview(self, req: Request, s: Session | None) -> Response:
        return self.render(req, "overview.html", session=s, **views.overview(self.app, self.control))

    def incidents(self, req: Request, s: Session | None) -> Response:
        q = req.query_params
        state, severity, pair = (q.get(k) or None for k in ("state", "severity", "pair"))
        if state is not None and state not in STATES:
            raise Refused(400, f"unknown state {state!r}; states are {', '.join(STATES)}")
        if severity is not None and severity not in views.SEVERITIES:
            raise Refused(400, f"unknown severity {severity!r}; severities are {', '.join(views.SEVERITIES)}")
        page = q.get("page", "1")
        if not page.isdigit() or not 1 <= int(page) <= 10**6:
            raise Refused(400, f"page must be a whole number from 1, got {page[:20]!r}")
        data = views.incidents(self.app, state=state, severity=severity, pair=pair, page=int(page))
        return self.render(req, "incidents.html", session=s, states=STATES, severities=views.SEVERITIES,
                           pairs=list(self.app.cfg.pairs), **data)

    def incident(self, req: Request, s: Session | None, incident_id: int) -> Response:
        return self.render(req, "incident.html", session=s, **views.incident(self.app, incident_id))

    def run(self, req: Request, s: Session | None, run_id: int) -> Response:
        data = views.run(self.app, run_id)
        if data is None:
            raise NotFoundError("run", run_id)
        return self.render(req, "run.html", session=s, **data)

    def report(self, req: Request, s: Session | None, run_id: int) -> Response:
        path = self.app.store.report_file(run_id)
        if path is None:
            raise Refused(404, f"run {run_id} has no report file")
        return FileResponse(path, media_type="text/html")

    def pair(self, req: Request, s: Session | None, name: str) -> Response:
        if name not in self.app.cfg.pairs:
            raise Refused(404, f"no pair {name!r}; pairs are {', '.join(self.app.cfg.pairs)}")
        before = req.query_params.get("before")
        if before is not None and not before.isdigit():
            raise Refused(400, f"before must be a run id, got {before[:20]!r}")
        data = views.pair(self.app, name, before=int(before) if before else None)
        return self.render(req, "pair.html", session=s, **data)

    # -- sign in and out -------------------------------------------------------------------------
    def login_page(self, req: Request, *, status: int = 200, error: str | None = None, nxt: str | None = None
                   ) -> Response:
        """The sign-in form, with a fresh login CSRF token in the form and in a cookie (double
        submit): another site cannot post a token of its own choosing into someone's browser."""
        token = secrets.token_urlsafe(24)
        out = self.render(req, "login.html", status, next=nxt or _local(req.query_params.get("next")),
                          login_csrf=token, error=error)
        out.set_cookie(value=token, **{**self.sessions.cookie_args(), "key": LOGIN_COOKIE, "max_age": 3600})
        return out

    async def login(self, req: Request) -> Response:
        fields = {k: v[0] for k, v in parse_qs((await req.body()).decode("utf-8", "replace")).items()}
        nxt = _local(fields.get("next"))
        cookie = req.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), fields.get("csrf", "").encode()):
            return self.login_page(req, status=403, nxt=nxt,
                                   error="the sign-in form expired or came from another site: sign in again here")
        user = self.users.authenticate(fields.get("token", "").strip())
        if user is None:
            return self.login_page(req, status=401, nxt=nxt, error="unknown token")
        out = RedirectResponse(nxt, status_code=303)
        out.set_cookie(value=self.sessions.issue(user), **self.sessions.cookie_args())
        out.delete_cookie(LOGIN_COOKIE, path="/")
        return out

    async def logout(self, req: Request) -> Response:
        try:
            await self.form_csrf(req)
        except Refused as exc:
            return self.render(req, "error.html", exc.status, message=exc.message)
        out = RedirectResponse("/login", status_code=303)
        out.delete_cookie(COOKIE, path="/")
        return out

    async def form_csrf(self, req: Request) -> None:
        s = self.session(req)
        fields = {k: v[0] for k, v in parse_qs((await req.body()).decode("utf-8", "replace")).items()}
        if s is not None and not s.csrf_ok(fields.get("csrf")):
            raise Refused(403, "the form's CSRF token does not match your session")

    # -- actions ---------------------------------------------------------------------------------
    def do_ack(self, s: Session, fields: dict[str, str], incident_id: int) -> str:
        self.app.incidents.ack(incident_id, s.user.name, note=_text(fields.get("note")))
        return f"/incidents/{incident_id}?done=acknowledged"

    def do_resolve(self, s: Session, fields: dict[str, str], incident_id: int) -> str:
        self.app.incidents.resolve(incident_id, s.user.name, note=_text(fields.get("note")))
        return f"/incidents/{incident_id}?done=resolved"

    def do_silence(self, s: Session, fields: dict[str, str], incident_id: int) -> str:
        from ..incidents.payload import incident_candidate
        from ..incidents.silences import parse_silence

        inc = self.app.incidents.get(incident_id)
        who = incident_candidate(inc)   # a pair with several candidates: this candidate's incidents only
        matchers, duration = parse_silence([f"pair={inc['pair']}", f"check={inc['check']}"]
                                           + ([f"candidate={who}"] if who else []), fields.get("duration") or "2h")
        self.app.incidents.add_silence(matchers, author=s.user.name, reason=_text(fields.get("note")) or "",
                                       duration=duration)
        return f"/incidents/{incident_id}?done=silenced"

    def do_accept(self, s: Session, fields: dict[str, str], run_id: int) -> str:
        from ..perf.accepted import accept_run, kept_models

        accept_run(self.app.store, run_id, actor=s.user.name, reason=_text(fields.get("reason")) or "",
                   kept=kept_models(self.app.cfg))
        return f"/runs/{run_id}?done=accepted"

    def do_diagnose(self, s: Session, fields: dict[str, str], run_id: int) -> str:
        """Diagnose the run now and keep it in its record (sentinel.diagnose.auto), then back to its
        page; a pair with several candidates: the form's ``candidate``, or every one."""
        from ..diagnose import DiagnoseError, diagnose_and_store_candidates
        from ..errors import ConfigError
        from ..revalidation import run_samples

        try:
            diagnose_and_store_candidates(self.app, run_id, by=s.user.name, read_samples=run_samples,
                                          candidate=fields.get("candidate") or None)
        except (ConfigError, DiagnoseError) as exc:   # the run and the configured models do not fit
            raise StateError(f"run {run_id} cannot be diagnosed: {exc}") from None
        return f"/runs/{run_id}?done=diagnosed"


def _text(value: str | None) -> str | None:
    """A form's text as every store keeps it (a lone surrogate or NUL escaped), None when empty."""
    from ..storage.repository import storable_text

    return storable_text(value, len(value)) if value else None


def _local(target: str | None) -> str:
    """A redirect target on this site only (``/incidents/3``), never ``//evil`` or a full URL."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _signature(fn: Callable[..., Any], drop: tuple[str, ...]) -> inspect.Signature:
    """``fn``'s parameters without ``drop``, after a ``req: Request``: what FastAPI reads to bind
    path parameters to a wrapper."""
    params = [p for name, p in inspect.signature(fn).parameters.items() if name not in ("req", *drop)]
    req = inspect.Parameter("req", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    return inspect.Signature([req, *[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]])
