"""`make bench-ingest`: the kafka-python source's ingest rate beside the raw client (issue 13, goal 1).

One run, one local Tansu broker, one topic of ``--messages`` (200,000) messages of the example
pair (``sentinel.examples.traffic.ordinary_traffic``, keyed by id). Prints a table:

* raw: a bare kafka-python consumer-group member polling and committing every batch;
* sentinel: the daemon's ingest loop (poll → decode → sample → store in SQLite → commit) in this
  process, in steady state (from the first record read after the start's Evidently preload to the
  last), at sampling rates 0.1 and 1.0, with
  ``kafka.id_from`` body (the default) and key.

Each figure is the median of ``--repeat`` passes (1 by default) over the same topic with a fresh
consumer group and store. ``--profile`` prints the top of a cProfile of one daemon pass instead.
A benchmark, not a test: figures depend on the machine (2 shared cores here) and are printed,
never asserted.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from sentinel.testing.broker import TansuBroker, unique_name  # noqa: E402

from e2e_harness import print_table, raw_kafka_python  # noqa: E402


def produce(bootstrap: str, topic: str, n: int) -> None:
    """``n`` example-pair messages, keyed by their id (compact JSON, as producers send them)."""
    import numpy as np
    from sentinel.examples.traffic import ordinary_traffic
    from sentinel.sources.kafka import make_producer, produce_json

    x, y = ordinary_traffic(np.random.default_rng(13), n)
    regions = ("eu", "us", "apac")
    producer = make_producer(bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    try:
        for start in range(0, n, 20_000):
            produce_json(producer, topic, ({"id": f"m{i}", "inputs": [float(v) for v in x[i]],
                                            "attributes": {"region": regions[i % 3]}, "label": int(y[i])}
                                           for i in range(start, min(n, start + 20_000))), timeout_s=300)
    finally:
        producer.close()


def sentinel_rate(workdir: Path, bootstrap: str, topic: str, n: int, rate: float, id_from: str = "body",
                  profile: cProfile.Profile | None = None, client: str = "kafka-python") -> float:
    """msg/s of the daemon's ingest loop on the ``client`` source, SQLite store."""
    from sentinel.app import build
    from sentinel.config import load_config
    from sentinel.daemon import Daemon
    from pairs import example_config

    d = Path(tempfile.mkdtemp(dir=workdir))
    cfg = load_config(example_config(d, bootstrap=bootstrap, topic=topic, sampling={"rate": rate, "window": 10_000_000},
                                     kafka={"bootstrap_servers": [bootstrap], "topic": topic, "group_id": unique_name("s"),
                                            "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "client": client,
                                            **({"id_from": id_from} if id_from != "body" else {})}))
    daemon = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=False)
    daemon.start()
    consumed = lambda: daemon.metrics.registry.get_sample_value("sentinel_messages_consumed_total") or 0  # noqa: E731
    try:
        first = 0
        while not first:   # the group join and the first fetch are not ingest
            first = daemon.ingest_once()
        # nor is the start's `import evidently` (5-7 s of CPU in a thread, sentinel/daemon.py), which
        # would take the GIL from the loop for the first seconds: steady state is measured
        for t in threading.enumerate():
            if t.name == "sentinel-preload":
                t.join()
        t0 = time.monotonic()
        if profile is not None:
            profile.enable()
        while consumed() < n:
            daemon.ingest_once()
        if profile is not None:
            profile.disable()
        return (consumed() - first) / (time.monotonic() - t0)
    finally:
        daemon.shutdown()


def median_of(repeat: int, fn) -> float:
    return statistics.median(fn() for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=1, help="passes per figure; the median is printed")
    ap.add_argument("--profile", action="store_true", help="cProfile one pass at --rate instead of the table")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--id-from", default="body,key", help="kafka.id_from values to measure (body,key)")
    args = ap.parse_args(argv)
    n = args.messages
    with tempfile.TemporaryDirectory(prefix="sentinel-ingest-") as tmp, TansuBroker() as broker:
        workdir, topic = Path(tmp), unique_name("ingest")
        broker.create_topic(topic, partitions=1)
        t0 = time.monotonic()
        produce(broker.bootstrap, topic, n)
        print(f"produced {n:,} messages in {time.monotonic() - t0:.0f} s", flush=True)
        if args.profile:
            prof = cProfile.Profile()
            got = sentinel_rate(workdir, broker.bootstrap, topic, n, args.rate, args.id_from.split(",")[0], prof)
            print(f"sentinel rate {args.rate} id_from {args.id_from}: {got:,.0f} msg/s (profiled)")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
            return 0
        raw = median_of(args.repeat, lambda: raw_kafka_python(broker.bootstrap, topic, n))
        print(f"  raw kafka-python: {raw:,.0f} msg/s", flush=True)
        rows = [["raw kafka-python (group + commit)", "", "", f"{raw:,.0f}", "1.00x"]]
        for rate in (0.1, 1.0):
            for id_from in args.id_from.split(","):
                got = median_of(args.repeat, lambda: sentinel_rate(workdir, broker.bootstrap, topic, n, rate, id_from))
                rows.append(["sentinel ingest loop", rate, id_from, f"{got:,.0f}", f"{got / raw:.2f}x"])
                print(f"  sentinel rate {rate} id_from {id_from}: {got:,.0f} msg/s", flush=True)
    print(f"\ningest: {n:,} messages of the example pair, one partition, SQLite store, median of {args.repeat}")
    print_table(["consumer", "rate", "id_from", "msg/s", "of raw"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
