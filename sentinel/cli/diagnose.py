"""``sentinel diagnose RUN_ID``: where in the network the run's candidate diverges from its float
twin (docs/diagnose.md); prints the table, writes the JSON result and the SVG plot, and keeps the
result in the run's record (replacing an automatic one)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import EXIT_FAILED, EXIT_OK, app_of, config_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="localise where a run's candidate diverges from its float reference, layer by layer")
    config_arg(p)
    p.add_argument("run_id", type=int)
    p.add_argument("--out", help="folder for the JSON result and SVG plot (default: the reports folder)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    p.add_argument("--candidate", help="in a pair with several candidates, diagnose this one (default: every one)")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when no tensor or weight is below its floor, 1 when one is (2: usage/config error,
    a candidate the pair does not list among them). A pair with several candidates: each one's
    diagnosis, under its name, in its own files."""
    from ..diagnose import diagnose_and_store_candidates
    from ..revalidation import resolve_report_dir, run_samples

    app = app_of(args)
    # kept in the run's record too: the console's run page and the API then show this one
    got, _ = diagnose_and_store_candidates(app, args.run_id, by="cli", read_samples=run_samples,
                                           candidate=args.candidate)
    out = Path(args.out) if args.out else resolve_report_dir(app.cfg)
    files = {name: write_diagnosis(d, out) for name, d in got.items()}
    if args.json:
        if list(got) == [None]:
            print(json.dumps({**got[None].to_dict(), "files": files[None]}, indent=2))
        else:
            print(json.dumps({"candidates": {n: {**d.to_dict(), "files": files[n]} for n, d in got.items()}}, indent=2))
    else:
        for name, d in got.items():
            print_diagnosis(d)
            print(f"written: {files[name]['json']}, {files[name]['svg']}")
    bad = any(d.below_floor or any(w.below_floor for w in d.weights) for d in got.values())
    return EXIT_FAILED if bad else EXIT_OK


def write_diagnosis(d: Any, folder: Path) -> dict[str, str]:
    """``run-<id>-diagnosis.json`` (the result, with the SVG inline) and ``run-<id>-diagnosis.svg``;
    ``run-<id>-<candidate>-diagnosis.*`` for a candidate of a pair with several."""
    from ..diagnose import sqnr_svg

    folder.mkdir(parents=True, exist_ok=True)
    svg = sqnr_svg(d)
    stem = folder / (f"run-{d.run_id}-diagnosis" if d.candidate is None else f"run-{d.run_id}-{d.candidate}-diagnosis")
    Path(f"{stem}.svg").write_text(svg, encoding="utf-8")
    Path(f"{stem}.json").write_text(json.dumps({**d.to_dict(), "svg": svg}, indent=2) + "\n", encoding="utf-8")
    return {"json": f"{stem}.json", "svg": f"{stem}.svg"}


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def print_diagnosis(d: Any) -> None:
    rows = d.rows
    pair = d.pair if d.candidate is None else f"{d.pair}, candidate {d.candidate}"
    what = f"run {d.run_id} ({pair})" if d.run_id is not None else (pair or "rows given")
    print(f"diagnosis of {what}: {rows['flipped']} flipped and {rows['agreeing']} agreeing rows; "
          + (f"{d.kind} candidate, floor {d.floors['sqnr_db']:g} dB ({d.floors['source']})" if d.mode == "layers"
             else "output level only"))
    if d.tensors:
        print(f"  {'layer':<24} {'op':<9} {'flipped':>8} {'agreeing':>8} {'drop':>7} {'here':>7} {'cos flip':>8} {'cos agr':>8} {'clipped f/a':>13}")
        for t in d.tensors:
            mark = " <" if t.tensor in d.named or t.tensor == d.origin else ("  below floor" if t.below_floor else "")
            print(f"  {t.node[:24]:<24} {t.op[:9]:<9} {_db(t.sqnr_flipped):>8} {_db(t.sqnr_agreeing):>8} {_db(t.drop):>7} "
                  f"{_db(t.introduced):>7} {_fmt_cos(t.cos_flipped):>8} {_fmt_cos(t.cos_agreeing):>8} {_clip(t):>13}{mark}")
    if d.weights:
        print("  weights: " + ", ".join(f"{w.name} {w.sqnr_db:.1f} dB{' (below floor)' if w.below_floor else ''}"
                                        for w in d.weights))
    for line in d.summary:
        print(f"  {line}")


def _clip(t: Any) -> str:
    if t.clipped_flipped is None and t.clipped_agreeing is None:
        return "-"
    return "/".join("-" if v is None else f"{v:.2%}" for v in (t.clipped_flipped, t.clipped_agreeing))


def _fmt_cos(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
