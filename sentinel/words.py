"""A check result in plain words, rendered from the test that decided it.

:func:`describe` turns a stored result row (or a ``CheckResult``'s ``to_row()``) into the one
sentence every title, headline, notification line and CLI row uses::

    class=malignant: missed malignant rate rose from 0.0% (reference window) to 3.1% of 455
    (+3.1 points), at or above the fail level of +2.0 points; significant (p_adj = 0.00014 <= 0.01)

    flip rate 0.2% of 2000, below the warn level of 2.0%

The numbers are the deciding test's own (``evidence["decision"]``, :class:`sentinel.verdict.Decision`)
with that test's level and direction; shares are written as percentages, differences of shares in
points, latency ratios as ``×1.60``. Every number pair is written with as many digits as keep the
stated comparison true as written (3.0% must not read "at or above 3.0%" when it is 2.996%).
A pass states what was measured and which level it stayed below, never a claim ("above level
0.02" is a test's name, not a finding). The grammar is fixed so tests can parse each sentence
back and check it (tests/test_true_sentences.py):

* ``<measured>, at or above the <fail|warn> level of <level>`` / ``<measured>, below the ...``;
* ``rose|fell from <a> to <b> ... (<+c points>)``: ``c`` is ``b - a`` as written;
* ``; significant (<p name> = <p> <= <alpha>)`` / ``; not significant (<p name> = <p> > <alpha>)``.

A bottom-layer module (imports only :mod:`sentinel.verdict`): check types are known here by
name, so the checks, incidents, notifiers, report and CLI can all use it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from .verdict import OPS, Decision, decision_of, result_type

# how the deciding value of each check type reads: "%" a share, "points" a difference of shares,
# "x" a ratio, "+" a plain change (a Brier score's), "" a plain number
SHARE_TESTS = ("above level",)
POINT_TYPES = frozenset({"critical_recall", "confidence", "robustness", "fairness"})
RATIO_TYPES = frozenset({"latency_p95", "latency_served", "perf_history"})
WORD = {">=": "at or above", "<": "below", ">": "above", "<=": "at or below"}
# (evidence key, baseline/reference key, current key, measure shown, direction of "bad")
FROM_TO = {
    "critical_recall": ("recall", "baseline", "candidate", "{cls} recall", "down"),
    "confidence": ("low_confidence_share", "baseline", "candidate", "low-confidence share", "up"),
    "robustness": ("flip_rate", "baseline", "candidate", "flip rate under perturbation", "up"),
    "calibration": ("brier", "baseline", "candidate", "Brier score", "up"),
}


def unit_of(row: Mapping[str, Any], d: Decision) -> str:
    kind = result_type(row)
    if kind == "decision_flips":
        return "points" if d.test == "increase over reference" else "%"
    if kind in POINT_TYPES:
        return "points"
    if kind == "calibration":
        return "+"
    if kind in RATIO_TYPES:
        return " s" if "(s)" in (d.measure or "") else "x"
    return ""


def fmt(v: float, unit: str, digits: int) -> str:
    """``v`` in ``unit`` with ``digits`` decimals (shares and points) or significant digits."""
    if unit == "%":
        return f"{v * 100:.{digits}f}%"
    if unit == "points":
        return f"{v * 100:+.{digits}f} points"
    if unit == "x":
        return f"×{v:.{digits + 2}g}"
    if unit == " s":
        return f"{v:.{digits + 2}g} s"
    if unit == "+":      # a plain change
        return f"{v:+.{digits + 2}g}"
    return f"{v:.{digits + 2}g}"


def parse_number(text: str) -> float:
    """The value a :func:`fmt` string stands for (the inverse, used by the tests too)."""
    m = re.fullmatch(r"×?([+-]?[\d.]+(?:e[-+]?\d+)?)(%| points| s)?", text.strip())
    if not m:
        raise ValueError(f"not a number as words.fmt writes them: {text!r}")
    v = float(m.group(1))
    return v / 100 if m.group(2) in ("%", " points") else v


def fmt_pair(a: float, op: str, b: float, unit: str) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest digits (at least one decimal) that keep ``a op b`` true as written."""
    for digits in range(1, 16):
        sa, sb = fmt(a, unit, digits), fmt(b, unit, digits)
        if OPS[op](parse_number(sa), parse_number(sb)):
            return sa, sb
    return repr(a), repr(b)


def _p(d: Decision) -> str:
    if d.p_op is None or d.p_value is None or d.alpha is None:
        return ""
    ok = OPS[d.p_op](d.p_value, d.alpha)
    for digits in range(2, 16):
        p, a = f"{d.p_value:.{digits}g}", f"{d.alpha:.{digits}g}"
        if OPS[d.p_op](float(p), float(a)) == ok:
            break
    op = {"<=": "≤", "<": "<", ">": ">", ">=": "≥"}[d.p_op]
    significant = d.p_op in ("<=", "<")
    return f"; {'significant' if significant else 'not significant'} ({d.p_name} = {p} {op} {a})"


def measure_of(row: Mapping[str, Any], d: Decision, *, with_test: bool = True) -> str:
    """What was measured, in words: the decision's measure, with the class direction made plain
    (a flip away from a class that is not safety-critical is not a "missed" one), and the test's
    name when it says more than the measure (``latency ratio (Hodges-Lehmann)``)."""
    measure = d.measure or str(row.get("message", "")).partition(":")[0].strip() or d.test
    m = re.fullmatch(r"missed (.+) rate", measure)
    if m and result_type(row) == "decision_flips" and not (row.get("evidence") or {}).get("critical"):
        measure = f"{m.group(1)}→other flip rate"
    if with_test and d.test and d.test != d.measure and not d.test.startswith(SHARE_TESTS):
        measure = f"{measure}, {d.test},"
    return measure


def _span_measure(row: Mapping[str, Any], d: Decision) -> str:
    """The measure of a from/to sentence: the quantity that changed, not its change."""
    kind = result_type(row)
    if kind not in FROM_TO:
        return measure_of(row, d, with_test=False)
    cls = (d.measure or "").partition(" recall")[0]
    return FROM_TO[kind][3].format(cls=cls)


def _from_to(row: Mapping[str, Any], d: Decision, unit: str) -> tuple[str, float, float] | None:
    """(word, a, b) when the row's evidence holds the two values whose change was judged."""
    ev = row.get("evidence") or {}
    kind = result_type(row)
    if d.where not in (None, row.get("slice")):
        return None     # a summary decided by another slice: its evidence is not this row's
    if kind == "decision_flips" and d.test == "increase over reference":
        a, b = (ev.get("reference") or {}).get("rate"), row.get("value")
        down = False
    elif kind in FROM_TO:
        key, ka, kb, _, direction = FROM_TO[kind]
        a, b = (ev.get(key) or {}).get(ka), (ev.get(key) or {}).get(kb)
        down = direction == "down"
    else:
        return None
    if a is None or b is None or not math.isfinite(d.value):
        return None
    change = (a - b) if down else (b - a)
    if not math.isclose(change, d.value, rel_tol=1e-6, abs_tol=1e-9):
        return None
    return ("fell" if b < a else "rose"), float(a), float(b)


def describe(row: Mapping[str, Any], *, with_where: bool | None = True) -> str:
    """The row in words (see the module docstring); the row's message when it has no decision
    (``insufficient_data``, ``error``, results stored before decisions were). ``with_where``:
    start with the slice; None: only when another slice decided (a summary row), for text that
    already names the row's slice."""
    d = decision_of(row)
    if d is None:
        return str(row.get("message", "")) or str(row.get("status", ""))
    unit = unit_of(row, d)
    if with_where is None:
        with_where = d.where not in (None, row.get("slice"))
    where = d.where or (row.get("slice") if with_where else None)
    text = _measured(row, d, unit)
    return f"{where}: {text}" if with_where and where else text


def _measured(row: Mapping[str, Any], d: Decision, unit: str) -> str:
    # the row's n is the deciding slice's only when the row is that slice (not a summary)
    own = d.where in (None, row.get("slice"))
    of = f" of {row['n']}" if unit in ("%", "points") and row.get("n") and own else ""
    span = _from_to(row, d, unit)
    if d.op is not None and d.level is not None:
        value, level = fmt_pair(d.value, d.op, d.level, unit)
        clause = f", {WORD[d.op]} the {d.level_name or 'set'} level of {level}"
    else:
        value = fmt(d.value, unit, 1 if unit in ("%", "points") else 2)
        clause = "" if d.p_op is not None else " (no level set)"
    if span is not None:
        word, a, b = span
        digits = _decimals(value) if unit == "points" else 2
        shown = {"points": "%", "+": ""}.get(unit, unit)
        ref = " (reference window)" if result_type(row) == "decision_flips" else ""
        loss = "loss " if FROM_TO.get(result_type(row), ("",) * 5)[4] == "down" else ""
        body = (f"{_span_measure(row, d)} {word} from {fmt(a, shown, digits)}{ref} to {fmt(b, shown, digits)}{of} "
                f"({loss}{value}){clause}")
    else:
        body = f"{measure_of(row, d)} {value}{of}{clause}"
    # a pass its level decided says so and no more: "significant" beside "below the level" reads
    # as an alarm
    return body + ("" if d.op == "<" else _p(d))


def _decimals(written: str) -> int:
    m = re.search(r"\.(\d+)", written)
    return len(m.group(1)) if m else 1


def status_line(row: Mapping[str, Any]) -> str:
    """``FAIL: <describe(row)>``: a result's status and its sentence."""
    return f"{str(row.get('status', '')).upper()}: {describe(row)}"


def check_label(check: str, candidate: str | None = None) -> str:
    """A result's check as reports, the console, the CLI and the gauges label it: prefixed by its
    candidate in a pair with several (``damaged:decision_flips``), the check alone otherwise."""
    return f"{candidate}:{check}" if candidate else check


def subject(pair: str, candidate: str | None = None) -> str:
    """What a title is about: the pair (``triage``), or in a pair with several candidates the pair
    and the candidate judged (``digits, candidate damaged``)."""
    return pair if candidate is None else f"{pair}, candidate {candidate}"
