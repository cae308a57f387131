"""What a check returns: one :class:`CheckResult` per slice, with the test that decided it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..verdict import Decision, sentence

STATUSES = ("pass", "warn", "fail", "insufficient_data", "error")
# how bad a status is, for a run's overall status (the worst of its results)
SEVERITY_ORDER = {"pass": 0, "insufficient_data": 1, "warn": 2, "error": 3, "fail": 4}


@dataclass
class CheckResult:
    """One check on one slice of one run.

    ``value`` is the check's headline measure on the slice and ``warn``/``fail`` its levels;
    ``decision`` is the test that set ``status`` (its own value, level, direction and p-value,
    which may differ from ``value``/``warn``/``fail``: the "increase over reference" test of
    ``decision_flips`` has its own levels). Every sentence about the result is rendered from
    ``decision`` (:func:`sentinel.verdict.sentence`); it is None for ``insufficient_data`` and
    ``error``. ``type`` is the check's type (``latency_p95``), which stays when a user renames
    the check. Both are stored inside the row's ``evidence`` (``decision``, ``check_type``).
    ``candidate`` names the candidate judged in a pair with several (``candidates:``; the
    ``check_results.candidate`` column), None in a single-candidate pair (the row then has no
    ``candidate`` key, as before)."""
    check: str
    slice: str
    status: str
    value: float | None
    n: int
    message: str
    warn: float | None = None
    fail: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    critical: bool = False      # concerns a safety-critical class (raises incident severity)
    decision: Decision | None = None
    type: str = ""
    candidate: str | None = None

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("critical", "decision", "type"):
            d.pop(k)
        if d["candidate"] is None:
            d.pop("candidate")
        d["evidence"] = {**_jsonable(self.evidence), "critical": self.critical}
        if self.type:
            d["evidence"]["check_type"] = self.type
        if self.decision is not None:
            d["evidence"]["decision"] = _jsonable(self.decision.to_dict())
        d["value"] = None if self.value is None or not math.isfinite(self.value) else float(self.value)
        return d


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=lambda s: SEVERITY_ORDER.get(s, 0), default="insufficient_data")


def worst_result(results: Sequence[CheckResult]) -> CheckResult | None:
    """The result whose status is the worst (the first of equals), e.g. the one that decided a
    summary result's status."""
    return max(results, key=lambda r: SEVERITY_ORDER.get(r.status, 0), default=None)


def deciding(results: Sequence[CheckResult]) -> Decision | None:
    """The decision of a result that summarises ``results`` (its status is their worst): the
    worst result's decision, naming that result's slice."""
    r = worst_result(results)
    if r is None or r.decision is None or r.status not in ("pass", "warn", "fail"):
        return None
    return replace(r.decision, where=r.slice)


def decided_by(decision: Decision | None, status: str) -> str:
    """``; decided by <sentence>`` for a summary's message when it warned or failed, else ``""``."""
    return f"; decided by {sentence(decision)}" if decision is not None and status in ("warn", "fail") else ""


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
