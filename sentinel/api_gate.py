"""``/api/v1/gate``: the rollout gate (sentinel/gate.py) for Argo Rollouts and Flagger.

- ``GET /api/v1/gate?pair=NAME&candidate=SHA256`` answers 200 with the verdict JSON
  ``{"ok", "verdict", "n", "runs", "run", "checks", "reason", "at", "pair", "candidate"}`` whatever it
  is: Argo Rollouts' ``web`` metric provider turns any non-2xx into a measurement *error*, not a
  failure, so its AnalysisTemplate reads ``result.ok`` / ``result.verdict`` instead
  (deploy/rollouts/analysis-template.yaml).
- ``strict`` turns the verdict into the status code, for Flagger webhooks (any status above 202
  fails the step): ``strict=1`` (or ``pass``) answers 412 unless the verdict is pass (for a
  ``confirm-promotion`` webhook: promotion waits), ``strict=fail`` answers 412 only on fail (for a
  ``rollout`` webhook, which counts failures towards a rollback: a window still filling must not
  count). The body is the same JSON.
- ``POST /api/v1/gate`` is the same question the way Flagger asks it: a POST whose JSON body is
  Flagger's webhook payload, ``pair`` and ``candidate`` in the query or in ``metadata``; here
  ``strict`` defaults to ``1`` (a Flagger webhook that can never fail would be a silent pass).
  It changes nothing, but the API's RequestGuard treats every POST as a mutation needing the
  bearer token, which Flagger cannot send: the daemon's API must let :data:`GATE_PATH` through
  as a read (``READ_ONLY_POSTS``).

``require=check1,check2`` overrides the checks that must have judged (names or types; default
``decision_flips``). Errors are the API's ``{"error": {"code", "message"}}``: 400 for a missing or
malformed parameter, 404 for an unknown pair.
"""
from __future__ import annotations

from typing import Any, Mapping

from fastapi import Body, Request
from fastapi.responses import JSONResponse

from .errors import NotFoundError
from .gate import GateError, Verdict, gate_verdict

GATE_PATH = "/api/v1/gate"
#: POST paths that only read: the API's guard should not ask them for the mutation token
READ_ONLY_POSTS = frozenset({GATE_PATH})
STRICT = {"": None, "0": None, "false": None, "no": None, "1": "pass", "true": "pass", "yes": "pass",
          "pass": "pass", "fail": "fail"}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _configured(app: Any, pair: str) -> str | None:
    """The sha256 of the candidate ``pair`` runs with now, when the app has its pairs loaded."""
    try:
        return app.pairs[pair].hashes["candidate"]["sha256"]
    except Exception:   # no pairs (a stand-in app) or the pair failed to load: only a hint is lost
        return None


def answer(app: Any, params: Mapping[str, Any], *, default_strict: str = "") -> JSONResponse:
    """The gate's HTTP answer to ``params`` (pair, candidate, strict, require)."""
    # spaces around a value are dropped, but a value of spaces alone is a value (the OpenAPI
    # document allows it: a pair of that name is not found, a candidate not 64 hex digits)
    pair, candidate = (str(params.get(k) or "") for k in ("pair", "candidate"))
    pair, candidate = pair.strip() or pair, candidate.strip() or candidate
    missing = [k for k, v in (("pair", pair), ("candidate", candidate)) if not v]
    if missing:
        return _error(400, "bad_request", f"{' and '.join(missing)} required: {GATE_PATH}?pair=NAME&candidate=SHA256")
    strict_raw = str(params.get("strict", default_strict)).strip().lower()
    if strict_raw not in STRICT:
        return _error(400, "bad_request", f"strict must be 1 (412 unless pass), fail (412 on fail) or 0, got {strict_raw[:40]!r}")
    require = [c.strip() for c in str(params.get("require") or "").split(",") if c.strip()] or None
    try:
        v: Verdict = gate_verdict(app.store, app.cfg, pair, candidate, require=require,
                                  configured=_configured(app, pair), incidents=getattr(app, "incidents", None))
    except GateError as exc:
        return _error(400, "bad_request", str(exc))
    except NotFoundError:
        return _error(404, "not_found", f"no pair {pair!r}; pairs are {sorted(app.cfg.pairs)}")
    body = v.to_dict(pair, candidate.lower())
    refuse = STRICT[strict_raw]
    blocked = (refuse == "pass" and not v.ok) or (refuse == "fail" and v.verdict == "fail")
    return JSONResponse(body, status_code=412 if blocked else 200)


def register_gate_routes(router: Any, app: Any) -> None:
    """Mount ``GET`` and ``POST`` :data:`GATE_PATH` on ``router`` (a FastAPI app or APIRouter)
    over ``app`` (a ``sentinel.app.App``: ``store``, ``cfg``, ``pairs``, ``incidents``)."""
    # the parameters are read (and refused with the gate's own messages) by ``answer``; the OpenAPI
    # document states them
    @router.get(GATE_PATH, openapi_extra={"parameters": [
        {"name": "pair", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
        {"name": "candidate", "in": "query", "required": True, "description": "sha256 of the candidate file",
         "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
        {"name": "strict", "in": "query", "required": False,
         "schema": {"type": "string", "enum": sorted(k for k in STRICT if k)}},
        {"name": "require", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 1000}}]})
    def gate(req: Request) -> JSONResponse:
        """The rollout verdict of candidate file ``candidate`` of ``pair`` (200 with the verdict;
        ``strict=1``: 412 unless pass, ``strict=fail``: 412 on fail)."""
        return answer(app, req.query_params)

    # Flagger's webhook: its JSON payload carries pair and candidate in ``metadata`` (or the query
    # does); strict unless told otherwise (docs/deploy.md, "Progressive delivery gates")
    hexsha = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
    @router.post(GATE_PATH, openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["metadata"], "properties": {"metadata": {
            "type": "object", "required": ["pair", "candidate"],
            "properties": {"pair": {"type": "string", "minLength": 1, "maxLength": 128}, "candidate": hexsha}}}}}}}})
    def gate_webhook(req: Request, body: Any = Body(None, include_in_schema=False)) -> JSONResponse:
        meta = body.get("metadata") if isinstance(body, dict) else None
        params = {**(meta if isinstance(meta, dict) else {}), **req.query_params}
        return answer(app, params, default_strict="1")
