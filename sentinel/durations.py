"""Durations as people type them (``90s``, ``15m``, ``2h``, ``1d``, ``1w``, or plain seconds).

A bottom-layer helper: config, incidents and notifiers all read durations, so it imports nothing
of Sentinel's."""
from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"1w"``. Negative values are
    returned as such (callers decide whether they are allowed); anything else raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 15m or 2h, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 90s, 15m, 2h or 1d, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]
