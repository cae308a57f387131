"""The trade-off table and plot of a run of several candidates (``record["tradeoff"]``, built by
sentinel.checks.tradeoff) as HTML, for the run report and the console's run page. A bottom-layer
helper: the record's dict in, an HTML fragment out; every text escaped."""
from __future__ import annotations

import html
from typing import Any, Mapping

from . import plots
from .printing import TRADEOFF_COLUMNS, tradeoff_cells, tradeoff_lines


def tradeoff_section(record: Mapping[str, Any] | None, *, heading: str = "h2") -> str:
    """The section (empty for a run of a single candidate): the table, the baseline's figures and
    what the safety checks are, the plot."""
    table = (record or {}).get("tradeoff")
    if not table or not table.get("candidates"):
        return ""
    e = lambda s: html.escape(str(s), quote=True)
    head = "".join(f"<th>{e(c)}</th>" for c in TRADEOFF_COLUMNS)
    rows = []
    for row in table["candidates"]:
        cells = tradeoff_cells(row)
        colour = plots.STATUS_COLOURS["pass" if row.get("safety_pass") else "fail"]
        middle = "".join(f"<td>{e(c)}</td>" for c in cells[1:-1])
        rows.append(f"<tr><td><b>{e(cells[0])}</b></td>{middle}"
                    f"<td style='color:{colour};font-weight:bold'>{e(cells[-1])}</td></tr>")
    notes = "".join(f"<p class='muted'>{e(line)}</p>" for line in tradeoff_lines(table)[len(table['candidates']) + 1:])
    points = [(r["candidate"], r.get("latency_ratio"), r.get("flip_rate"), bool(r.get("safety_pass")))
              for r in table["candidates"]]
    return (f"<{heading} id='tradeoff'>Candidates compared</{heading}>"
            "<p>Each candidate judged against the same baseline outputs on this window.</p>"
            f"<table class='tradeoff'><tr>{head}</tr>{''.join(rows)}</table>{notes}"
            f"<div class='plots'>{plots.tradeoff(points)}</div>")
