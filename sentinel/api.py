"""The daemon's HTTP API (DESIGN.md): health, metrics, runs, reports and incidents.

Mutating endpoints need ``Authorization: Bearer <token>`` (the token from the env var named by
``api.token_env`` or the file ``api.token_file``); with no token configured they are refused.
Reads are open unless ``api.public_reads`` is false. Errors are ``{"error": {"code", "message"}}``.
"""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import read_secret
from .errors import NotFoundError, StateError


def jsonable(obj: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(obj)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(message)


def create_app(daemon: Any) -> FastAPI:
    cfg = daemon.cfg
    app = FastAPI(title="Sentinel", version="1", docs_url="/docs", redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    @app.exception_handler(NotFoundError)
    async def _not_found(_req: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"error": {"code": "not_found", "message": str(exc)}}, status_code=404)

    @app.exception_handler(StateError)
    async def _state(_req: Request, exc: StateError) -> JSONResponse:
        return JSONResponse({"error": {"code": "conflict", "message": str(exc)}}, status_code=409)

    def token() -> str | None:
        return read_secret(cfg.api.token_env, cfg.api.token_file)

    def authorise(req: Request, *, mutate: bool) -> None:
        if not mutate and cfg.api.public_reads:
            return
        expected = token()
        if not expected:
            raise ApiError(403, "forbidden", f"no API token configured (set {cfg.api.token_env} or api.token_file)")
        got = req.headers.get("authorization", "")
        if not got.startswith("Bearer ") or not hmac.compare_digest(got[7:].encode(), expected.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")

    def actor(req: Request) -> str:
        return req.headers.get("x-sentinel-actor", "api")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "state": daemon.state.value}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """503 naming each failing part with its reason (sentinel/health.py); /healthz is liveness."""
        health = getattr(daemon, "health", None)
        if health is None:   # before start() built it
            body = {"ready": False, "problems": [f"daemon: {daemon.state.value}"],
                    "parts": {"daemon": {"ok": False, "reason": f"the daemon is {daemon.state.value}"}}}
        else:
            body = health.report()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(daemon.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/pairs")
    def pairs(req: Request) -> dict[str, Any]:
        authorise(req, mutate=False)
        nxt = daemon.next_run_times()
        return {"pairs": [{"name": name, "classes": p.classes, "critical_classes": p.critical_classes,
                           "models": p.hashes, "pending_samples": daemon.store.pending_count(name),
                           "next_run": nxt.get(name).isoformat() if nxt.get(name) else None}
                          for name, p in daemon.pairs.items()]}

    @app.get("/api/v1/runs")
    def runs(req: Request, pair: str | None = None, limit: int = 50) -> dict[str, Any]:
        authorise(req, mutate=False)
        return {"runs": daemon.store.list_runs(pair=pair, limit=max(1, min(limit, 1000)))}

    @app.get("/api/v1/runs/{run_id}")
    def run(req: Request, run_id: int) -> dict[str, Any]:
        authorise(req, mutate=False)
        r = daemon.store.get_run(run_id)
        if r is None:
            raise NotFoundError("run", run_id)
        return r

    @app.get("/api/v1/runs/{run_id}/report")
    def report(req: Request, run_id: int) -> FileResponse:
        authorise(req, mutate=False)
        r = daemon.store.get_run(run_id)
        if r is None:
            raise NotFoundError("run", run_id)
        if not r.get("report_path") or not Path(r["report_path"]).exists():
            raise ApiError(404, "not_found", f"run {run_id} has no report file")
        return FileResponse(r["report_path"], media_type="text/html")

    @app.post("/api/v1/runs")
    def revalidate(req: Request, pair: str | None = None) -> JSONResponse:
        authorise(req, mutate=True)
        names = [pair] if pair else sorted(daemon.pairs)
        unknown = [n for n in names if n not in daemon.pairs]
        if unknown:
            raise ApiError(404, "not_found", f"no pair {unknown[0]!r}; pairs are {sorted(daemon.pairs)}")
        out = []
        for name in names:
            o = daemon.revalidate(name, trigger="api")
            out.append({"pair": name, "run_id": o.run_id if o else None, "status": o.status if o else "skipped"})
        return JSONResponse({"runs": out}, status_code=201)

    @app.post("/api/v1/runs/{run_id}/accept")
    def accept(req: Request, run_id: int, body: Any = Body(None)) -> dict[str, Any]:
        """{"reason": "..."}: accept the run's performance as the new normal (docs/performance.md)."""
        from .perf.accepted import accept_run, kept_models

        authorise(req, mutate=True)
        if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"reason": "..."}')
        kept = kept_models(cfg)
        try:
            return accept_run(daemon.store, run_id, actor=actor(req), reason=body["reason"], kept=kept)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None

    @app.get("/api/v1/incidents")
    def incidents(req: Request, state: str | None = None, pair: str | None = None, limit: int = 100) -> dict[str, Any]:
        authorise(req, mutate=False)
        return {"incidents": daemon.incidents.list(state=state, pair=pair, limit=max(1, min(limit, 1000)))}

    @app.get("/api/v1/incidents/{incident_id}")
    def incident(req: Request, incident_id: int) -> dict[str, Any]:
        authorise(req, mutate=False)
        return daemon.incidents.get(incident_id)

    def note_of(body: Any) -> str | None:
        if body is None:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
            raise ApiError(400, "bad_request", 'body must be a JSON object like {"note": "..."}')
        return body.get("note") or None

    @app.post("/api/v1/incidents/{incident_id}/ack")
    def ack(req: Request, incident_id: int, body: Any = Body(None)) -> dict[str, Any]:
        authorise(req, mutate=True)
        daemon.incidents.ack(incident_id, actor(req), note=note_of(body))
        return daemon.incidents.get(incident_id)

    @app.post("/api/v1/incidents/{incident_id}/resolve")
    def resolve(req: Request, incident_id: int, body: Any = Body(None)) -> dict[str, Any]:
        authorise(req, mutate=True)
        daemon.incidents.resolve(incident_id, actor(req), note=note_of(body))
        return daemon.incidents.get(incident_id)

    # Silences: {"matchers": ["pair=triage", "check=~decision_.*"], "duration": "2h", "author": "alice",
    # "reason": "retraining"}; the author defaults to the X-Sentinel-Actor header.
    @app.get("/api/v1/silences")
    def silences(req: Request, all: bool = False) -> dict[str, Any]:  # noqa: A002 - the query parameter's name
        authorise(req, mutate=False)
        return {"silences": daemon.incidents.silences(active_only=not all)}

    @app.post("/api/v1/silences")
    def silence(req: Request, body: Any = Body(None)) -> JSONResponse:
        from .durations import parse_duration
        from .incidents.matchers import parse_matcher

        authorise(req, mutate=True)
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
            created = daemon.incidents.add_silence(matchers, author=str(body.get("author") or actor(req)),
                                                   reason=str(body.get("reason") or ""), duration=duration)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return JSONResponse(jsonable(created), status_code=201)

    @app.delete("/api/v1/silences/{silence_id}")
    def expire(req: Request, silence_id: int) -> dict[str, Any]:
        authorise(req, mutate=True)
        return daemon.incidents.expire_silence(silence_id, actor(req))

    return app
