"""Console page render times at size: `make bench-console` (not a test).

Seeds a store (SQLite in a temporary directory, or ``--url``) with 10,000 finished runs of one
pair (6 check results each, a reproducibility record of ~``--record-kb`` KB like a real run's)
and 1,000 incidents opened through the real incident engine (a third acknowledged, a third
resolved), then requests every console page and the list endpoints of the API through the real
app (Starlette's test client: no network) ``--repeat`` times each, signed in as a responder, and
prints the median and worst time and the size of each answer. It also prints what
``GET /api/v1/runs?limit=50`` would weigh with full records (the API before summaries).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def seed(app, runs: int, incidents: int, record_kb: int) -> int:
    """Bulk-insert ``runs`` runs with results, then open ``incidents`` incidents through the engine."""
    import datetime as dt

    from sqlalchemy import insert

    from sentinel.checks.result import CheckResult
    from sentinel.storage import tables as t
    from seeds import flip_result, latency_result

    store, now = app.store, dt.datetime.now(dt.timezone.utc)
    pad = ["%064x" % i for i in range(max(1, record_kb * 1024 // 68))]
    rows = [r.to_row() for r in (flip_result(0.004), latency_result(1.02))]
    rows += [CheckResult(f"drift/feature_{k}", "overall", "pass", 0.01 * k, 500, f"psi = {0.01 * k:.2f}", 0.1, 0.2).to_row()
             for k in range(4)]
    with store.engine.begin() as conn:
        for start in range(0, runs, 500):
            batch = [dict(pair="triage", trigger="schedule", status="pass", n_samples=500,
                          started_at=now - dt.timedelta(hours=runs - i), finished_at=now - dt.timedelta(hours=runs - i),
                          record={"models": {"candidate": {"sha256": "c" * 64}}, "samples": {"ids": pad},
                                  "perf": {"timings": {"candidate": {"p95": 0.3}}, "accepted": i % 50 == 0}})
                     for i in range(start, min(runs, start + 500))]
            conn.execute(insert(t.runs), batch)
        ids = [r for (r,) in conn.exec_driver_sql("select id from runs order by id")]
        conn.execute(insert(t.check_results), [{**row, "run_id": rid} for rid in ids for row in rows])
    eng = app.incidents
    for i in range(incidents):
        rid = ids[len(ids) - incidents + i]
        [ch] = eng.process_run("triage", rid, [CheckResult(f"check_{i}", "overall", "fail", 0.3, 500, "rate = 0.3", 0.1, 0.2)])
        if i % 3 == 1:
            eng.ack(ch.incident_id, "alice", note="looking")
        elif i % 3 == 2:
            eng.resolve(ch.incident_id, "alice", note="fixed")
    return ids[-1]


def measure(client, path: str, repeat: int) -> tuple[float, float, int, int]:
    times, size, status = [], 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        size, status = len(r.content), r.status_code
    return statistics.median(times), max(times), size, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--incidents", type=int, default=1_000)
    ap.add_argument("--record-kb", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--url", help="a store URL (default: SQLite in a temporary directory)")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from consoles import Control, make_console_app
    from sentinel.api import jsonable
    from sentinel.app import http_app as create_app

    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-console-"))
    started = make_console_app(tmp, args.url)
    t0 = time.perf_counter()
    last = seed(started.app, args.runs, args.incidents, args.record_kb)
    print(f"seeded {args.runs:,} runs (~{args.record_kb} KB records) and {args.incidents:,} incidents "
          f"in {time.perf_counter() - t0:.0f} s ({started.app.store.engine.url.get_backend_name()})")
    client = TestClient(create_app(started.app, Control()), base_url="https://testserver")
    client.post("/login", data={"token": started.tokens["alice"], "next": "/"})
    inc = started.app.incidents.page(state="open", limit=1)[0][0]["id"]
    pages = ["/", "/incidents", "/incidents?state=open&severity=high&page=5", f"/incidents/{inc}",
             f"/runs/{last}", "/pairs/triage", f"/pairs/triage?before={last - 5000}",
             "/api/v1/runs?limit=50", "/api/v1/incidents?state=open&limit=100", f"/api/v1/incidents/{inc}"]
    print(f"\n{'page':48} {'median ms':>10} {'max ms':>8} {'KB':>8} status")
    for path in pages:
        med, worst, size, status = measure(client, path, args.repeat)
        print(f"{path:48} {med:10.1f} {worst:8.1f} {size / 1024:8.1f} {status}")
    full = len(json.dumps(jsonable({"runs": started.app.store.list_runs(limit=50)})))
    print(f"\nGET /api/v1/runs?limit=50 with full records (before summaries): {full / 1024:,.0f} KB")


if __name__ == "__main__":
    main()
