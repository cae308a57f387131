"""The "did you mean" hint of every unknown-name error (config keys, check params, notifier
params, escalation targets). A bottom-layer helper: no imports from the rest of Sentinel."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str], *, cutoff: float = 0.6, listing: str | None = None) -> str:
    """`` (did you mean 'min_speedup'?)`` for the closest of ``known``; when none is close, the
    known names after ``listing`` (`` (known: a, b)``), or ``""`` when ``listing`` is None or
    nothing is known. Starts with a space so it can be appended to a message."""
    names = list(known)
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=cutoff)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" ({listing}: {', '.join(names)})" if listing and names else ""
