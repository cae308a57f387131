"""Label matchers (for silences and escalation policies), parsed from the strings people type:
``pair=triage``, ``slice!=overall``, ``check=~decision_.*`` (durations: :mod:`sentinel.durations`).

An incident's labels are ``pair``, ``check``, ``severity``, ``state``, ``slice`` and
``candidate`` (the candidate's name in a pair with several; empty for a single-candidate pair,
so ``candidate=int8`` never matches one and ``candidate!=int8`` always does); a grouped incident
has several slices and a ``slice`` matcher matches when any of them does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

LABELS = ("pair", "check", "slice", "severity", "state", "candidate")
_MATCHER = re.compile(r"^\s*([A-Za-z_]+)\s*(=~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str      # "=", "!=" or "=~" (a regex matched against the whole value)
    value: str

    def matches(self, labels: Mapping[str, Any]) -> bool:
        got = labels.get(self.name)
        values = [str(v) for v in got] if isinstance(got, (list, tuple)) else [str(got if got is not None else "")]
        if self.op == "=":
            return self.value in values
        if self.op == "!=":
            return self.value not in values
        return any(re.fullmatch(self.value, v) for v in values)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    """``NAME=VALUE``, ``NAME!=VALUE`` or ``NAME=~REGEX``; raises ValueError with a one-line reason."""
    m = _MATCHER.match(text or "")
    if not m:
        raise ValueError(f"matcher {text!r}: expected NAME=VALUE, NAME!=VALUE or NAME=~REGEX")
    name, op, value = m.groups()
    if name not in LABELS:
        raise ValueError(f"matcher {text!r}: unknown label {name!r}; labels are {', '.join(LABELS)}")
    if op == "=~":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"matcher {text!r}: invalid regex ({exc})") from None
    return Matcher(name, op, value)


def matcher_from_dict(d: Mapping[str, Any]) -> Matcher:
    return Matcher(str(d["name"]), str(d["op"]), str(d["value"]))


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, Any]) -> bool:
    return all(m.matches(labels) for m in matchers)
