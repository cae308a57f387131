"""The comparison that decided a check result, and the one way it is put into words.

A check result's status comes from one test: a value (a rate, an effect size, a latency ratio)
compared with a level, often together with a p-value compared with a false-alarm rate. That test
is kept on the result as a :class:`Decision` (stored in the result row's ``evidence["decision"]``)
and every sentence about the result is rendered from it, so the words cannot disagree with the
status ("rate 0.031 >= fail level 0.05" when the test that fired had its own level 0.02): the
checks' own messages by :func:`sentence` (compact, ``a >= level b``), and everything a responder
reads (incident titles, notifications, the CLI, the report) by :func:`sentinel.words.describe`
(plain words, percentages and points, the from/to values the evidence holds).

A bottom-layer module: plain data and text, no imports from the rest of Sentinel, so the checks,
the incident engine, the notifiers and the report can all use it.
"""
from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from typing import Any, Mapping

#: comparison operators a decision may state, and what they mean
OPS = {">=": operator.ge, "<": operator.lt, "<=": operator.le, ">": operator.gt}


@dataclass(frozen=True)
class Decision:
    """The test that set a result's status.

    ``test`` names it (``increase over reference``, ``above level 0.05``, ``latency ratio
    (Hodges-Lehmann)``...) and ``measure`` what was measured (``missed malignant rate``).
    ``value op level`` is the stated comparison of the test's value with its level (``level_name``
    ``fail`` or ``warn``): ``>=`` when the level was reached (status fail/warn), ``<`` when the
    value stayed below it (pass); ``op`` is None when the level did not decide (a pass that is
    not significant). ``p_value p_op alpha`` is the significance half (``p_name`` says which
    p-value: ``p_adj`` after the family correction, ``Mann-Whitney p``), None where the test has
    no p-value. ``where`` is the slice that decided when the result summarises several slices.
    Every check alarms when its value is *higher* than its level (rates, losses, distances,
    latency ratios), so ``>=`` is always the bad direction."""
    test: str
    value: float
    op: str | None = None
    level: float | None = None
    level_name: str | None = None
    p_value: float | None = None
    p_op: str | None = None
    alpha: float | None = None
    p_name: str = "p"
    measure: str = ""
    where: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Decision | None":
        if not d or d.get("value") is None or not d.get("test"):
            return None
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})

    def comparisons(self) -> list[tuple[float, str, float]]:
        """The comparisons the sentence states, as (left, op, right)."""
        out = []
        if self.op is not None and self.level is not None:
            out.append((float(self.value), self.op, float(self.level)))
        if self.p_op is not None and self.p_value is not None and self.alpha is not None:
            out.append((float(self.p_value), self.p_op, float(self.alpha)))
        return out

    def holds(self) -> bool:
        """Every stated comparison is true (a check's own consistency check)."""
        return all(OPS[op](a, b) for a, op, b in self.comparisons())


def number_pair(a: float, op: str, b: float, digits: int = 4) -> tuple[str, str]:
    """``a`` and ``b`` written with as few digits (at least ``digits``) as keep ``a op b`` true as
    written: 0.04996 < 0.05 must not read "0.05 < 0.05"."""
    for d in range(digits, 18):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if OPS[op](float(sa), float(sb)):
            return sa, sb
    return repr(float(a)), repr(float(b))


def comparison(d: Decision) -> str:
    """The value-vs-level half: ``0.0252 >= fail level 0.02`` (or the value alone when no level
    decided)."""
    if d.op is None or d.level is None:
        return f"{d.value:.4g}"
    v, lv = number_pair(d.value, d.op, d.level)
    return f"{v} {d.op} {d.level_name + ' level ' if d.level_name else ''}{lv}"


def sentence(d: Decision, *, with_measure: bool = True) -> str:
    """``class=malignant: missed malignant rate, increase over reference: 0.0252 >= fail level
    0.02, p_adj 0.0012 <= 0.01``; a pass that was not significant: ``above level 0.02: 0.03,
    p_adj 0.31 > 0.01``. ``with_measure=False`` leaves out ``where`` and ``measure`` (for a
    message that already starts with them)."""
    name = d.test
    if with_measure and d.measure and d.measure not in d.test:
        name = f"{d.measure}, {d.test}"
    text = f"{name}: {comparison(d)}"
    if d.p_op is not None and d.p_value is not None and d.alpha is not None:
        p, a = number_pair(d.p_value, d.p_op, d.alpha, 3)
        text += f", {d.p_name} {p} {d.p_op} {a}"
    return f"{d.where}: {text}" if with_measure and d.where else text


def decision_of(row: Mapping[str, Any]) -> Decision | None:
    """The decision stored with a check result row (``evidence["decision"]``), if any."""
    return Decision.from_dict((row.get("evidence") or {}).get("decision"))


def result_type(row: Mapping[str, Any]) -> str:
    """A stored result row's check type (``evidence["check_type"]``). Rows stored before results
    carried their type fall back to the check name, which was the type unless renamed."""
    ev = row.get("evidence") or {}
    return str(ev.get("check_type") or str(row.get("check", "")).split("/")[-1])
