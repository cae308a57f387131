"""`make bench-scale`: how fast Sentinel ingests and how replicas share the work (issue 13).

One run prints four tables, on one local Tansu broker:

1. ingest: each source (kafka-python, librdkafka/confluent) beside its raw client on the same
   topic, at sampling rates 0.1 and 1.0: the table of ``make bench-ingest`` (benchmarks/ingest.py,
   which says how each figure is taken), ``kafka.id_from: body``.
2. revalidation: the example pair with its full shipped suite at 10k, 100k and 1M samples:
   ``sentinel revalidate --input`` wall time (imports included) and peak RSS, the daemon's
   ``Revalidator.run`` from claiming the window to the report written, and the daemon's RSS after
   start (benchmarks/revalidation_scale.py; ``--only revalidation`` runs just this table).
3. replicas: 1, 2 and 3 `sentinel run` processes on one PostgreSQL database and one topic of 6
   partitions, rate 1.0: messages stored per second, from the first stored row to the last.
4. the replica fault test of tests/test_replicas.py at full size (--kill-messages, 300,000 by
   default; 0 skips it): 3 daemons, one SIGKILLed mid-ingest and restarted; stored + quarantined
   = produced, scheduled slots claimed once, notifications delivered once.

A benchmark, not a test: figures depend on the machine (2 shared cores here) and are printed,
never asserted. PostgreSQL from $SENTINEL_TEST_PG (default postgres@127.0.0.1:5432).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from sentinel.testing.broker import TansuBroker, unique_name  # noqa: E402

from e2e_harness import BenchStore, print_table  # noqa: E402


def ingest_table(workdir: Path, broker: TansuBroker, n: int) -> None:
    """The table of ``make bench-ingest`` (benchmarks/ingest.py), ``kafka.id_from: body``."""
    from ingest import ingest_table as table, produce

    topic = unique_name("ingest")
    broker.create_topic(topic, partitions=1)
    produce(broker.bootstrap, topic, n)
    table(workdir, broker.bootstrap, topic, n, ["body"], repeat=1)
    # issue 13's kafka-python goals were set with its CRC-32C in Python (crc32c not installed):
    # the same table for that client so, in a process that cannot import crc32c
    print("\nkafka-python without the crc32c C extension (as when issue 13 was filed):", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("ingest.py")), "--messages", str(n),
                    "--id-from", "body", "--clients", "kafka-python", "--pure-crc"], check=True)


def replicas_rate(workdir: Path, broker: TansuBroker, n: int, replicas: int) -> float:
    """msg/s stored by ``replicas`` `sentinel run` processes sharing one PostgreSQL and 6 partitions."""
    from test_replicas import Proc, counts, replica_config, traffic, wait_for
    from sentinel.sources.confluent import produce_values

    store = BenchStore("postgresql", workdir)
    topic = unique_name("rep")
    broker.create_topic(topic, partitions=6)
    produced = produce_values(broker.bootstrap, topic, traffic(n, "r", bad_every=0))
    procs = [Proc(replica_config(workdir / f"rep{replicas}", f"r{i}", store_url=store.url, bootstrap=broker.bootstrap,
                                 topic=topic, group=f"g-{topic}", interval=3600, candidate="candidate.int8.onnx")).start()
             for i in range(replicas)]
    try:
        wait_for(lambda: counts(store.url)[0] > 0, 300, "the first stored sample", step=0.2)
        t0 = time.monotonic()
        wait_for(lambda: sum(counts(store.url)[::2]) >= produced, 3600, "every message", step=0.5)
        return produced / (time.monotonic() - t0)
    finally:
        for p in procs:
            p.stop()
        store.drop()


def replicas_table(workdir: Path, broker: TansuBroker, n: int) -> None:
    rows, base = [], None
    for k in (1, 2, 3):
        rate = replicas_rate(workdir, broker, n, k)
        base = base or rate
        rows.append([k, f"{rate:,.0f}", f"{rate / base:.2f}x"])
        print(f"  {k} replica(s): {rate:,.0f} msg/s", flush=True)
    print(f"\nreplicas: {n:,} messages, 6 partitions, one PostgreSQL, librdkafka source, rate 1.0")
    print_table(["replicas", "stored msg/s", "of 1 replica"], rows)


def kill_table(workdir: Path, broker: TansuBroker, n: int) -> None:
    from test_replicas import run_three_replicas

    store = BenchStore("postgresql", workdir)
    try:
        r = run_three_replicas(workdir / "kill", store.url, broker, n)
    finally:
        store.drop()
    s, distinct, q = r["counts"]
    print(f"\nreplica faults: 3 daemons, 6 partitions, one SIGKILLed at {r['at_kill']:,} stored and restarted")
    print_table(["produced", "stored", "quarantined", "stored twice", "lost", "slots claimed", "claimed twice",
                 "runs overlapping", "notifications", "repeats", "seconds"],
                [[r["produced"], s, q, s - distinct, r["produced"] - s - q, r["slots"], len(r["duplicate_slots"]),
                  len(r["overlapping_runs"]), r["notifications"], r["repeats"], f"{r['ingest_seconds']:.0f}"]])


# -- revalidation at 10k / 100k / 1M samples (issue 13, goal 2): benchmarks/revalidation_scale.py --
def revalidation_table(sizes: list[int]) -> None:
    from revalidation_scale import revalidation_table as table

    table(sizes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000, help="ingest table: messages per source (200,000)")
    ap.add_argument("--replica-messages", type=int, default=60_000, help="replicas table: messages per run (60,000)")
    ap.add_argument("--kill-messages", type=int, default=300_000, help="replica fault run (300,000; 0 skips it)")
    ap.add_argument("--revalidation-sizes", default="10000,100000,1000000",
                    help="revalidation table: samples per run, comma-separated (10000,100000,1000000)")
    ap.add_argument("--only", choices=["ingest", "revalidation", "replicas", "kill"], action="append",
                    help="run only these tables (e.g. --only revalidation)")
    args = ap.parse_args(argv)
    only = set(args.only or ["ingest", "revalidation", "replicas", "kill"])
    if only == {"revalidation"}:   # no broker needed
        revalidation_table([int(n) for n in args.revalidation_sizes.split(",")])
        return 0
    with tempfile.TemporaryDirectory(prefix="sentinel-scale-") as tmp, TansuBroker() as broker:
        workdir = Path(tmp)
        if "ingest" in only:
            ingest_table(workdir, broker, args.messages)
        if "revalidation" in only:
            revalidation_table([int(n) for n in args.revalidation_sizes.split(",")])
        if "replicas" in only:
            replicas_table(workdir, broker, args.replica_messages)
        if "kill" in only and args.kill_messages:
            kill_table(workdir, broker, args.kill_messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
