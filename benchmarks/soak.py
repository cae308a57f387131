"""Soak test of the daemon: `make soak` (a benchmark, not a test; 20 minutes by default).

The real daemon (``sentinel run``, a subprocess) reads a steady stream of the example pair's
ordinary traffic (``--rate`` msg/s, a ``--malformed`` share of malformed messages) from the real
Tansu broker into SQLite or PostgreSQL, and revalidates every ``--interval`` seconds (60). Every
~10 s the daemon's RSS (``/proc/PID/status`` VmRSS, the main process) is sampled.

Prints: RSS at the start (the first sample after warm-up: once the first revalidation finished,
or ``--warmup-runs``) and at the end, its least-squares slope in MB per hour over the samples
after warm-up, the runs done (from the store, by status), and the messages lost: produced -
stored - quarantined - not sampled, every message accounted by its Kafka position after the daemon drained and stopped
(not sampled = the daemon's own sampling function says its id is outside the rate; the window is
larger than the soak so nothing is evicted). Must be 0.

The goal, printed as PASS/FAIL: RSS flat within 10% after warm-up (the fitted line's rise over the
post-warm-up period at most 10% of the start RSS), 0 lost, 0 crashes, at least one run.

    python benchmarks/soak.py [--minutes 20] [--rate 200] [--store sqlite|postgresql]
    SOAK_MINUTES=60 make soak
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# this checkout's code, for the harness as for the daemon it starts (e2e_harness.REPO)
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from sentinel.sampling import Sampler  # noqa: E402
from sentinel.sources.kafka import make_producer  # noqa: E402
from sentinel.messages import quick_id  # noqa: E402
from sentinel.storage.repository import in_sample  # noqa: E402
from sentinel.testing.broker import unique_name  # noqa: E402
from sentinel.testing.hostile import FAMILIES, QUARANTINE, HostileGenerator  # noqa: E402

from e2e_harness import (BenchStore, DaemonSupervisor, account, bench, daemon_failures, free_port,  # noqa: E402
                         print_table, write_config)

ORDINARY_MALFORMED = ("random_bytes", "wrong_types", "empty", "non_utf8")
PAIR, SAMPLING_SEED = "triage", 0


@dataclass
class Traffic:
    """The producer thread's record: per message index its family and id; acknowledged positions."""
    families: list[str] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    positions: dict[tuple[int, int], int] = field(default_factory=dict)
    refused: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None



def _quick_id(value: bytes | None) -> str | None:
    """The id the daemon samples a message by before decoding it, or None when it decodes it first."""
    quick = quick_id(value, {PAIR: None})   # type: ignore[dict-item] - only the pair names are read
    return None if quick is None else quick[1]

def produce_steadily(bootstrap: str, topic: str, gen: HostileGenerator, rate: float, out: Traffic) -> None:
    """``rate`` messages a second in 0.1 s ticks until ``out.stop``; positions recorded as the
    broker acknowledges them (futures are resolved as they complete, so memory stays flat)."""
    pending: collections.deque = collections.deque()

    def settle(block: bool) -> None:
        while pending and (block or pending[0][1].is_done):
            i, fut = pending.popleft()
            try:
                md = fut.get(timeout=30)
                out.positions[(md.partition, md.offset)] = i
            except Exception:  # noqa: BLE001 - refused: not produced
                out.refused += 1

    try:
        producer = make_producer([bootstrap], linger_ms=5)
        stream = gen.generate(10**12)
        t0, sent = time.monotonic(), 0
        while not out.stop.is_set():
            due = int((time.monotonic() - t0) * rate)
            while sent < due:
                m = next(stream)
                i = len(out.families)
                out.families.append(m.family)
                # the sampling decision comes before the decode when the id can be read without it
                # (messages.quick_id): a malformed message outside the sample is not sampled, not quarantined
                out.ids.append(m.msg_id if m.expect != QUARANTINE else _quick_id(m.value))
                key = f"k{i}".encode() if m.value is None else None
                pending.append((i, producer.send(topic, value=m.value, key=key, timestamp_ms=m.timestamp_ms)))
                sent += 1
            settle(block=False)
            out.stop.wait(0.1)
        producer.flush(timeout=60)
        settle(block=True)
        producer.close(timeout=10)
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        out.done.set()


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) in MB per hour."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in samples) / var * 3600


@dataclass
class Observed:
    rss: list[tuple[float, float]] = field(default_factory=list)    # (s since start, MB)
    warm_at: float | None = None                                      # first run finished (s)
    pids: set[int] = field(default_factory=set)


def observe(sup: DaemonSupervisor, store: BenchStore, seconds: float, every: float, t0: float,
            warmup_runs: int = 1) -> Observed:
    """Sample RSS every ``every`` s for ``seconds``, probing /healthz and restarting a dead daemon;
    warm-up ends when ``warmup_runs`` revalidations have finished."""
    ob = Observed()
    next_sample = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not sup.check():
            break
        sup.probe_health()
        if time.monotonic() >= next_sample:
            rss = sup.rss_mb()
            if rss is not None:
                ob.rss.append((time.monotonic() - t0, rss))
                ob.pids.add(sup.pid)
            if ob.warm_at is None and sum(r["finished_at"] is not None for r in _runs(store)) >= warmup_runs:
                ob.warm_at = time.monotonic() - t0
            next_sample += every
            if len(ob.rss) % max(1, round(60 / every)) == 1:
                runs = len(_runs(store))
                print(f"  {(time.monotonic() - t0) / 60:5.1f} min  rss {rss and round(rss, 1)} MB  runs {runs}", flush=True)
        time.sleep(min(2.0, max(0.1, next_sample - time.monotonic())))
    return ob


def _runs(store: BenchStore) -> list[dict]:
    try:
        return store.runs()
    except Exception:  # noqa: BLE001 - schema not there yet
        return []


def drain(sup: DaemonSupervisor, store: BenchStore, traffic: Traffic, not_sampled: int, timeout_s: float) -> bool:
    """Wait (bounded) until the store holds a row for every produced message the sampler keeps."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = store.row_counts()
        if counts and sum(counts) >= len(traffic.positions) - not_sampled:
            return True
        if not sup.check():
            return False
        time.sleep(1.0)
    return False


def run(args: argparse.Namespace) -> int:
    share = args.malformed
    families = {"valid": 1.0 - share}
    malformed = list(FAMILIES) if args.hostile else list(ORDINARY_MALFORMED)
    malformed = [f for f in malformed if f != "valid"]
    families.update({f: share / len(malformed) for f in malformed})
    print(f"soak: {args.minutes:g} min, {args.rate:g} msg/s ({share:.0%} malformed: {', '.join(malformed)}), "
          f"revalidation every {args.interval:g} s, sampling rate {args.sampling_rate:g}, store {args.store}", flush=True)
    traffic = Traffic()
    with bench("sentinel-soak-", args.store, keep=args.keep) as b:
        topic = unique_name("soak")
        b.broker.create_topic(topic, partitions=1)
        port = free_port()
        expected = int(args.rate * args.minutes * 60 * 1.2) + 1000
        cfg = write_config(b.workdir, bootstrap=b.broker.bootstrap, topic=topic, store_url=b.store.url,
                           api_port=port, interval_seconds=args.interval, rate=args.sampling_rate,
                           window=10 * expected)
        sup = b.start_daemon(cfg, port, args.max_restarts)
        if sup is None:
            return 1
        gen = HostileGenerator(args.seed, families=families)
        t0 = time.monotonic()
        threading.Thread(target=produce_steadily, args=(b.broker.bootstrap, topic, gen, args.rate, traffic),
                         daemon=True).start()
        try:
            ob = observe(sup, b.store, args.minutes * 60, args.sample_seconds, t0, args.warmup_runs)
        finally:
            traffic.stop.set()
        traffic.done.wait(120)
        sampler = Sampler(args.sampling_rate, seed=SAMPLING_SEED)
        skipped = {i for i, mid in enumerate(traffic.ids) if mid is not None and not in_sample(sampler.key(PAIR, mid), args.sampling_rate)}
        drained = drain(sup, b.store, traffic, len(skipped), 120)
        consumed = sup.metric("sentinel_messages_consumed_total") if sup.alive() else None
        stop_code = sup.stop() if sup.alive() else None
        stored, quarantined = b.store.positions(topic)
        acc = account(traffic.positions, len(traffic.families), stored, quarantined, skipped)
        return report(args, traffic, acc, ob, sup, _runs(b.store), drained, consumed, stop_code,
                      time.monotonic() - t0)


def report(args, traffic: Traffic, acc, ob: Observed, sup: DaemonSupervisor, runs: list[dict], drained: bool,
           consumed: float | None, stop_code: int | None, elapsed: float) -> int:
    ids = set(traffic.positions.values())
    n = len(ids)
    by = collections.Counter(acc.outcome[i] for i in ids)
    lost = by["lost"]
    warm = [(t, v) for t, v in ob.rss if ob.warm_at is not None and t >= ob.warm_at]
    if len(warm) < 2:          # a soak too short to see a run finish: judge from the first minute on
        warm = [(t, v) for t, v in ob.rss if t >= min(60.0, ob.rss[-1][0] / 2)] if ob.rss else []
    slope = slope_per_hour(warm)
    start_mb, end_mb = (warm[0][1], warm[-1][1]) if warm else (None, None)
    span_h = (warm[-1][0] - warm[0][0]) / 3600 if len(warm) > 1 else 0.0
    rise = slope * span_h if slope is not None else None
    flat = rise is not None and start_mb is not None and rise <= 0.10 * start_mb
    statuses = collections.Counter(r["status"] for r in runs)
    print()
    print_table(["figure", "value"], [
        ["duration", f"{elapsed / 60:.1f} min ({args.rate:g} msg/s target)"],
        ["messages produced", f"{n} ({traffic.refused} refused by the broker)"],
        ["stored / quarantined / not sampled", f"{by['stored']} / {by['quarantined']} / {by['not_sampled']}"],
        ["messages lost", f"{lost}"],
        ["stored or quarantined twice", f"{acc.duplicated}"],
        ["runs done", f"{sum(statuses.values())} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})"],
        ["warm-up ends", f"{ob.warm_at / 60:.1f} min ({args.warmup_runs} run(s) finished)" if ob.warm_at
         else "never (too few runs finished)"],
        ["RSS start (after warm-up)", f"{start_mb:.1f} MB" if start_mb else "-"],
        ["RSS end", f"{end_mb:.1f} MB" if end_mb else "-"],
        ["RSS max after warm-up", f"{max(v for _, v in warm):.1f} MB" if warm else "-"],
        ["RSS slope (least squares)", f"{slope:+.1f} MB/h over {len(warm)} samples" if slope is not None else "-"],
        ["RSS fitted rise after warm-up", f"{rise:+.1f} MB ({rise / start_mb:+.1%})" if rise is not None and start_mb else "-"],
        ["daemon crashes / restarts", f"{len(sup.exits)} / {sup.starts - 1}"],
        ["/healthz probes failed", f"{sup.health_failures} of {sup.health_probes}"],
        ["consumed_total (last daemon)", f"{consumed:.0f}" if consumed is not None else "-"],
        ["stop exit code, children left", f"{stop_code}, {len(sup.orphans)}"],
    ])
    for e in sup.exits[:5]:
        print(f"  exit at {e.at_s:.0f} s, code {e.code}: {e.cause}")
    failures = daemon_failures(sup, acc, lost)
    if not flat:
        failures.append("RSS not flat within 10% after warm-up")
    if not runs:
        failures.append("no revalidation ran")
    if not drained:
        failures.append("the daemon did not catch up within 120 s after traffic stopped")
    if traffic.error:
        failures.append(f"producer failed: {traffic.error}")
    if len(ob.pids) > 1:
        failures.append("RSS samples span more than one daemon process")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 20)))
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second (default 200)")
    ap.add_argument("--malformed", type=float, default=0.02, help="share of malformed messages (default 0.02)")
    ap.add_argument("--hostile", action="store_true",
                    help="malformed messages from every hostile family (default: ordinary malformed ones)")
    ap.add_argument("--interval", type=float, default=60.0, help="revalidation interval, s (default 60)")
    ap.add_argument("--sampling-rate", type=float, default=0.25)
    ap.add_argument("--warmup-runs", type=int, default=1, help="warm-up ends after this many runs (default 1)")
    ap.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling period (default 10 s)")
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-restarts", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (config, logs, SQLite file)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
