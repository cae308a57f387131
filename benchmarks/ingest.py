"""`make bench-ingest`: each Kafka source's ingest rate beside its raw client (issue 13, goal 1).

One run, one local Tansu broker, one topic of ``--messages`` (200,000) messages of the example
pair (``sentinel.examples.traffic.ordinary_traffic``, keyed by id). Prints one table, per client
(kafka-python, then librdkafka through confluent-kafka):

* raw: a bare consumer-group member of that client polling and committing every batch (of the
  source's default size: 5,000 records for kafka-python, 10,000 for confluent);
* sentinel: the daemon's ingest loop on that client's source (poll → sample → decode → store in
  SQLite → commit) in this process (kafka-python: with its consumer in a process of its own, the
  default, and in this one, ``kafka.consumer_process: false``), in steady state (from the first record read after the start's
  Evidently preload to the last), at sampling rates 0.1 and 1.0 with a window larger than the
  topic (every message inside the rate is stored: the worst case), and at rate 1.0 with the
  default window of 10,000 (filled by the first 10,000 messages; after that only what would enter
  it is decoded), with ``kafka.id_from`` body (the default) and key.

Each figure is the median of ``--repeat`` passes (1 by default) over the same topic with a fresh
consumer group and store; a ratio is the median of each pass's loop figure over the raw figure
taken just before it in the same pass. ``--profile`` prints the top of a cProfile of one daemon pass instead;
``--stages`` only the loop's CPU per message by stage (sample and decode, store), without a broker.
A benchmark, not a test: figures depend on the machine (2 shared cores here) and are printed,
never asserted.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]
if "--pure-crc" in sys.argv:   # before kafka-python is imported: its CRC-32C in Python, as without crc32c
    sys.modules["crc32c"] = None  # type: ignore[assignment]
    # and in kafka-python's consumer process (a new interpreter, which inherits the environment):
    # a sitecustomize that blocks the import the same way, first on its path
    _blocker = Path(tempfile.mkdtemp(prefix="sentinel-pure-crc-"))
    (_blocker / "sitecustomize.py").write_text('import sys\nsys.modules["crc32c"] = None\n')
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_blocker), os.environ.get("PYTHONPATH")) if p)

from sentinel.testing.broker import TansuBroker, unique_name  # noqa: E402

from sentinel.config import POLL_RECORDS  # noqa: E402

from e2e_harness import print_table, raw_confluent, raw_kafka_python  # noqa: E402


def produce(bootstrap: str, topic: str, n: int) -> None:
    """``n`` example-pair messages, keyed by their id (compact JSON, as producers send them)."""
    from sentinel.sources.kafka import make_producer, produce_json

    producer = make_producer(bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1)
    try:
        messages = example_messages(n)
        for start in range(0, n, 20_000):
            produce_json(producer, topic, (next(messages) for _ in range(start, min(n, start + 20_000))),
                         timeout_s=300)
    finally:
        producer.close()


def example_messages(n: int):
    """The benchmark's ``n`` messages of the example pair, as objects, in order."""
    import numpy as np
    from sentinel.examples.traffic import ordinary_traffic

    x, y = ordinary_traffic(np.random.default_rng(13), n)
    regions = ("eu", "us", "apac")
    return ({"id": f"m{i}", "inputs": [float(v) for v in x[i]], "attributes": {"region": regions[i % 3]},
             "label": int(y[i])} for i in range(n))


def stage_costs(workdir: Path, n: int, repeat: int) -> None:
    """CPU per message of the ingest loop's two stages, without a broker: ``read_batch`` (sample,
    decode) and ``Store.ingest`` (SQLite), on the benchmark's messages in polled batches of
    kafka-python's size, record timestamps shared per millisecond as a busy producer's are. The
    loop's ceiling on one core is 1 / their sum, whatever the client feeding it. The last column
    is the total over the second half of the messages only: with the default window, the first
    10,000 fill it and the share that still enters falls as more are seen (bottom-k: about
    window / seen), so the second half is nearer a long-running daemon's cost."""
    import gc

    import orjson
    from sentinel.app import build
    from sentinel.config import load_config
    from sentinel.daemon import GC_YOUNG_ALLOCATIONS, read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord
    from pairs import example_config

    size = POLL_RECORDS["kafka-python"]
    values = [orjson.dumps(m) for m in example_messages(n)]
    gc.freeze()   # as the daemon does once started
    gc.set_threshold(GC_YOUNG_ALLOCATIONS, *gc.get_threshold()[1:])
    rows = []
    for rate, window in ((0.1, EVERY), (1.0, EVERY), (0.1, DEFAULT_WINDOW), (1.0, DEFAULT_WINDOW)):
        got: list[tuple[float, float]] = []
        for _ in range(repeat):
            cfg = load_config(example_config(Path(tempfile.mkdtemp(dir=workdir)),
                                             sampling={"rate": rate, "window": window}))
            app = build(cfg, load_models=False).load()
            shapes = {name: p.shape for name, p in app.pairs.items()}
            s = cfg.sampling
            sampler = Sampler(s.rate, s.window, s.seed, tuple(s.stratify_by))
            decode = store = late = 0.0
            late_n = 0
            bars: dict = {}   # as read_and_store keeps them (no run claims the window here: none goes stale)
            for start in range(0, n, size):
                recs = [RawRecord("t", 0, i, None, values[i], 1_764_000_000_000 + i // 50)   # as the sources hand them
                        for i in range(start, min(n, start + size))]
                c0 = time.process_time()
                b = read_batch(recs, shapes, sampler, None, cfg.ingest.max_message_bytes, bars=bars)
                c1 = time.process_time()
                res = app.store.ingest(b.samples, b.labels, b.bad, window=s.window, rate=s.rate,
                                       max_strata=s.max_strata, not_sampled=b.not_sampled, above_bar=b.above_bar)
                bars.update(res.bars)
                c2 = time.process_time()
                decode, store = decode + c1 - c0, store + c2 - c1
                if start >= n // 2:
                    late, late_n = late + c2 - c0, late_n + len(recs)
            app.store.dispose()
            got.append((decode / n * 1e6, store / n * 1e6, late / max(1, late_n) * 1e6))
        med = [statistics.median(g[k] for g in got) for k in (0, 1, 2)]
        rows.append([rate, _window(window), f"{med[0]:.1f}", f"{med[1]:.1f}", f"{med[0] + med[1]:.1f}",
                     f"{1e6 / (med[0] + med[1]):,.0f}", f"{med[2]:.1f}"])
    print(f"\ningest loop stages: {n:,} messages of the example pair, polled batches of {size:,}, SQLite store, "
          f"CPU per message, median of {repeat} passes")
    print_table(["rate", "window", "sample + decode (us)", "store (us)", "total (us)", "ceiling on one core (msg/s)",
                 "total, second half (us)"], rows)


#: sampling windows measured: one larger than any run here (every message inside the rate is
#: stored), and the default, which a busy topic fills: then only what would enter it is decoded
EVERY, DEFAULT_WINDOW = 10_000_000, 10_000


def _window(window: int) -> str:
    return "every message" if window == EVERY else f"{window:,} (default)"


def sentinel_rate(workdir: Path, bootstrap: str, topic: str, n: int, rate: float, id_from: str = "body",
                  profile: cProfile.Profile | None = None, client: str = "kafka-python",
                  consumer_process: bool = True, window: int = EVERY) -> tuple[float, float, float | None]:
    """msg/s of the daemon's ingest loop on the ``client`` source, SQLite store: ``(per wall second,
    per CPU second of this process, per CPU second of kafka-python's consumer process or None)``."""
    from sentinel.app import build
    from sentinel.config import load_config
    from sentinel.daemon import Daemon
    from pairs import example_config

    d = Path(tempfile.mkdtemp(dir=workdir))
    cfg = load_config(example_config(d, bootstrap=bootstrap, topic=topic, sampling={"rate": rate, "window": window},
                                     kafka={"bootstrap_servers": [bootstrap], "topic": topic, "group_id": unique_name("s"),
                                            "session_timeout_ms": 6000, "heartbeat_interval_ms": 2000, "client": client,
                                            "consumer_process": consumer_process,
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
        child = getattr(daemon.source, "pid", None)
        t0, c0, k0 = time.monotonic(), time.process_time(), _cpu_seconds(child)
        if profile is not None:
            profile.enable()
        while consumed() < n:
            daemon.ingest_once()
        if profile is not None:
            profile.disable()
        got = consumed() - first
        return (got / (time.monotonic() - t0), got / (time.process_time() - c0),
                got / (_cpu_seconds(child) - k0) if child else None)
    finally:
        daemon.shutdown()


def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 for None."""
    if pid is None:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_of(repeat: int, fn) -> float:
    return statistics.median(fn() for _ in range(repeat))


#: kafka.consumer_process values measured per client (kafka-python: its consumer in a process of
#: its own, the default, and in the daemon's; librdkafka has its own threads)
VARIANTS = {"kafka-python": (True, False), "confluent": (False,)}

RAW = {"kafka-python": lambda b, t, n: raw_kafka_python(b, t, n, POLL_RECORDS["kafka-python"]),
       "confluent": lambda b, t, n: raw_confluent(b, t, n, POLL_RECORDS["confluent"])}


def ingest_table(workdir: Path, bootstrap: str, topic: str, n: int, id_froms: list[str], repeat: int,
                 clients: tuple[str, ...] = tuple(RAW)) -> None:
    """Per client: the raw consumer, then the daemon's loop on that client's source at rates 0.1
    and 1.0 for each ``kafka.id_from``, all on ``topic``; prints the table. The passes are
    interleaved (each raw figure is taken just before the loop figures it is compared with) and
    the medians printed, ratios included: on shared cores the load moves between passes. Each
    figure is given per wall second and per CPU second of the process (what one idle core would
    do; the broker's own CPU is not in it)."""
    runs = [(c, rate, i, proc, w) for c in clients for proc in VARIANTS[c]
            for rate, w in ((0.1, EVERY), (1.0, EVERY), (1.0, DEFAULT_WINDOW)) for i in id_froms]
    raws: dict[str, list[tuple[float, float]]] = {c: [] for c in clients}
    got: dict[tuple, list[tuple[float, float]]] = {r: [] for r in runs}
    for k in range(repeat):
        for client in clients:
            raws[client].append(RAW[client](bootstrap, topic, n))
            print(f"  pass {k + 1}: raw {client}: {_show(raws[client][-1])}", flush=True)
            for run in (r for r in runs if r[0] == client):
                got[run].append(sentinel_rate(workdir, bootstrap, topic, n, run[1], run[2], client=client,
                                              consumer_process=run[3], window=run[4]))
                print(f"  pass {k + 1}: {_loop(run)} rate {run[1]} window {_window(run[4])} id_from {run[2]}: "
                      f"{_show(got[run][-1], raws[client][-1])}", flush=True)
    rows = []
    for client in clients:
        rows.append([client, f"raw (group + commit, {POLL_RECORDS[client]:,} a poll)", "", "", "",
                     *_cells(raws[client], raws[client])])
        rows += [[client, _loop(r), r[1], _window(r[4]), r[2], *_cells(got[r], raws[client])]
                 for r in runs if r[0] == client]
    fast = [name for name in ("crc32c", "orjson") if sys.modules.get(name, 0) is not None
            and importlib.util.find_spec(name) is not None]
    print(f"\ningest: {n:,} messages of the example pair, one partition, SQLite store, median of {repeat} "
          f"interleaved passes; C extensions: {', '.join(fast) or 'none (no crc32c, no orjson)'}")
    print_table(["client", "consumer", "rate", "window", "id_from", "msg/s", "of raw", "msg/CPU-s", "of raw (CPU)"],
                rows)


def _loop(run: tuple) -> str:
    if run[0] != "kafka-python":
        return "sentinel ingest loop"
    return "sentinel, consumer process" if run[3] else "sentinel, one process"


def _show(fig: tuple[float, float], raw: tuple[float, float] | None = None) -> str:
    of = f" ({fig[0] / raw[0]:.2f}x, CPU {fig[1] / raw[1]:.2f}x)" if raw else ""
    kid = f"; its consumer process {fig[2]:,.0f} msg/CPU-s" if len(fig) > 2 and fig[2] else ""
    return f"{fig[0]:,.0f} msg/s, {fig[1]:,.0f} msg/CPU-s{of}{kid}"


def _cells(figs: list[tuple[float, float]], raws: list[tuple[float, float]]) -> list[str]:
    """Median wall and CPU rates, and the medians of the per-pass ratios to the raw client."""
    med = statistics.median
    return [f"{med(f[0] for f in figs):,.0f}", f"{med(f[0] / r[0] for f, r in zip(figs, raws)):.2f}x",
            f"{med(f[1] for f in figs):,.0f}", f"{med(f[1] / r[1] for f, r in zip(figs, raws)):.2f}x"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=1, help="passes per figure; the median is printed")
    ap.add_argument("--profile", action="store_true", help="cProfile one pass at --rate instead of the table")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--client", default="kafka-python", choices=sorted(RAW), help="--profile: the source to profile")
    ap.add_argument("--id-from", default="body,key", help="kafka.id_from values to measure (body,key)")
    ap.add_argument("--clients", default=",".join(RAW), help="clients to measure (kafka-python,confluent)")
    ap.add_argument("--pure-crc", action="store_true",
                    help="kafka-python without the crc32c C extension (its CRC-32C in Python, as when issue 13 was filed)")
    ap.add_argument("--stages", action="store_true",
                    help="only the loop's CPU per message by stage, without a broker (no Kafka client in it)")
    args = ap.parse_args(argv)
    n = args.messages
    if args.stages:
        with tempfile.TemporaryDirectory(prefix="sentinel-stages-") as tmp:
            stage_costs(Path(tmp), n, args.repeat)
        return 0
    with tempfile.TemporaryDirectory(prefix="sentinel-ingest-") as tmp, TansuBroker() as broker:
        workdir, topic = Path(tmp), unique_name("ingest")
        broker.create_topic(topic, partitions=1)
        t0 = time.monotonic()
        produce(broker.bootstrap, topic, n)
        print(f"produced {n:,} messages in {time.monotonic() - t0:.0f} s", flush=True)
        if args.profile:
            prof = cProfile.Profile()
            got = sentinel_rate(workdir, broker.bootstrap, topic, n, args.rate, args.id_from.split(",")[0], prof,
                                client=args.client)
            print(f"{args.client} rate {args.rate} id_from {args.id_from}: {_show(got)} (profiled)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(45)
            return 0
        ingest_table(workdir, broker.bootstrap, topic, n, args.id_from.split(","), args.repeat,
                     tuple(args.clients.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
