"""End-to-end fuzz of Sentinel: `make fuzz` (a benchmark, not a test).

Generated hostile messages (``sentinel.testing.hostile``: deep nesting, huge integers, 1e400 as an
integer, lone surrogates escaped and as raw bytes, NUL bytes, NaN/Infinity literals, non-UTF-8,
UTF-16/32, numbers as strings and booleans, non-string attributes, huge and "²" labels, timestamps
out of range both ways in the message and in the Kafka record, strata longer than 255 characters,
ids with lone surrogates, empty and tombstone values, messages past the size limit, random bytes,
mutated messages, wrong types), mixed with ordinary traffic of the example pair, go through the
real Tansu broker into the real daemon (``sentinel run``, a subprocess) writing to SQLite or to a
PostgreSQL database made for the run.

What must hold (the documented contract, README "Message format"):

* 0 crashes: the daemon process never exits on its own and answers /healthz throughout (two
  failed probes in a row while it runs count as down);
* stored + quarantined = produced, exactly, by Kafka position: every message the broker
  acknowledged has one samples row or one quarantine row at its (partition, offset); none has
  two; sampling is at rate 1.0 with a window larger than the run, so nothing may be left out;
* each message's fate matches its family's expectation where the format decides it (valid ->
  stored; outside the format -> quarantined); ``either`` cases only need to be kept.

A daemon that exits is restarted (``--max-restarts``); ingest that makes no progress for
``--stall-seconds`` or does not finish within ``--timeout`` ends the run. Every wait is bounded;
the exit code is 1 when anything above failed. Prints a table per family and a summary.

    python benchmarks/fuzz.py [--messages 100000] [--seed 1] [--store sqlite|postgresql]
"""
from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# this checkout's code, for the harness as for the daemon it starts (e2e_harness.REPO)
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from sentinel.sources.kafka import make_producer  # noqa: E402
from sentinel.testing.broker import unique_name  # noqa: E402
from sentinel.testing.hostile import FAMILIES, QUARANTINE, STORE, Hostile, HostileGenerator  # noqa: E402

from e2e_harness import (Accounting, BenchStore, DaemonSupervisor, account, bench, daemon_failures,  # noqa: E402
                         free_port, print_table, write_config)


@dataclass
class Produced:
    """What the broker acknowledged: position -> message index; refusals by index."""
    positions: dict[tuple[int, int], int] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def produce(bootstrap: str, topic: str, messages: list[Hostile], out: Produced) -> None:
    t0 = time.monotonic()
    try:
        producer = make_producer([bootstrap], max_request_size=2_000_000, linger_ms=5)
        futures = []
        for i, m in enumerate(messages):
            # kafka-python sends a null value (tombstone) only with a key
            key = f"k{i}".encode() if m.value is None else None
            try:
                futures.append((i, producer.send(topic, value=m.value, key=key, timestamp_ms=m.timestamp_ms)))
            except Exception as exc:  # noqa: BLE001 - refused client side: not produced
                out.refused[i] = f"{type(exc).__name__}: {exc}"[:120]
        producer.flush(timeout=300)
        for i, fut in futures:
            try:
                md = fut.get(timeout=60)
                out.positions[(md.partition, md.offset)] = i
            except Exception as exc:  # noqa: BLE001 - refused by the broker: not produced
                out.refused[i] = f"{type(exc).__name__}: {exc}"[:120]
        producer.close(timeout=10)
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        out.seconds = time.monotonic() - t0
        out.done.set()


@dataclass
class Watch:
    stalled: bool = False
    timed_out: bool = False
    finished_s: float | None = None     # when every produced message was accounted for
    readyz: collections.Counter = field(default_factory=collections.Counter)
    consumed_metric: float | None = None


def watch(sup: DaemonSupervisor, store: BenchStore, topic: str, prod: Produced, *, timeout_s: float,
          stall_s: float, t0: float) -> Watch:
    """Until everything produced is accounted for, the daemon is down for good, ingest stalls, or
    the deadline passes; probing /healthz every 2 s and /readyz every 10 s."""
    w = Watch()
    last_total, last_change, next_health, next_ready = -1, time.monotonic(), 0.0, 0.0
    while True:
        now = time.monotonic()
        if not sup.check():
            break
        if now >= next_health:
            sup.probe_health()
            next_health = now + 2
        if now >= next_ready and sup.alive():
            status, _ = sup.get("/readyz", timeout=10)
            if status is not None:     # None: not answering (starting or stopping), seen by /healthz
                w.readyz[status] += 1
            next_ready = now + 10
        counts = store.row_counts()
        total = sum(counts) if counts else 0
        if total != last_total:
            last_total, last_change = total, now
        if prod.done.is_set():
            if prod.error:
                break
            if total >= len(prod.positions) and _exact(store, topic, prod):
                w.finished_s = time.monotonic() - t0
                break
            if now - max(last_change, t0 + prod.seconds) > stall_s:
                w.stalled = True
                break
        if now - t0 > timeout_s:
            w.timed_out = True
            break
        time.sleep(1.0)
    if sup.alive():
        w.consumed_metric = sup.metric("sentinel_messages_consumed_total")
    return w


def _exact(store: BenchStore, topic: str, prod: Produced) -> bool:
    stored, quarantined = store.positions(topic)
    acc = account(prod.positions, max(prod.positions.values(), default=-1) + 1, stored, quarantined)
    wanted = set(prod.positions.values())
    return all(acc.outcome[i] != "lost" for i in wanted)


def off_contract(m: Hostile, outcome: str) -> bool:
    """Kept, but in the wrong table for what the format says (a lost message counts as lost)."""
    return (m.expect == STORE and outcome == "quarantined") or (m.expect == QUARANTINE and outcome == "stored")


def family_rows(messages: list[Hostile], prod: Produced, acc: Accounting) -> tuple[list[list], dict[str, int]]:
    fams: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    examples: dict[str, int] = {}
    for i in prod.positions.values():
        m, o = messages[i], acc.outcome[i]
        c = fams[m.family]
        c["produced"] += 1
        c[o] += 1
        if o == "quarantined":
            reasons[m.family][acc.reason[i]] += 1
        if off_contract(m, o):
            c["off"] += 1
            examples.setdefault(f"{m.family}/{m.variant}: expected {m.expect}, got {o}", 0)
            examples[f"{m.family}/{m.variant}: expected {m.expect}, got {o}"] += 1
    for i in prod.refused:
        fams[messages[i].family]["refused"] += 1
    rows = []
    for fam in sorted(fams, key=lambda f: (f != "valid", f)):
        c = fams[fam]
        top = ", ".join(f"{r}={n}" for r, n in reasons[fam].most_common(4))
        rows.append([fam, c["produced"], c["stored"], c["quarantined"], c["lost"], c["off"], c["refused"], top])
    return rows, examples


def run(args: argparse.Namespace) -> int:
    families = None
    if args.families:
        names = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = sorted(set(names) - set(FAMILIES))
        if unknown:
            print(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
            return 2
        families = {f: FAMILIES[f] for f in names}
    t_gen = time.monotonic()
    messages = list(HostileGenerator(args.seed, families=families).generate(args.messages))
    print(f"fuzz: {args.messages} messages, seed {args.seed}, store {args.store}; generated in "
          f"{time.monotonic() - t_gen:.1f} s ({sum(len(m.value or b'') for m in messages) / 1e6:.0f} MB)", flush=True)
    with bench("sentinel-fuzz-", args.store, keep=args.keep) as b:
        topic = unique_name("fuzz")
        b.broker.create_topic(topic, partitions=args.partitions)
        port = free_port()
        cfg = write_config(b.workdir, bootstrap=b.broker.bootstrap, topic=topic, store_url=b.store.url,
                           api_port=port, interval_seconds=86400, rate=1.0, window=10 * args.messages + 1000,
                           stratify_by=["region"])
        sup = b.start_daemon(cfg, port, args.max_restarts)
        if sup is None:
            return 1
        prod = Produced()
        t0 = time.monotonic()
        threading.Thread(target=produce, args=(b.broker.bootstrap, topic, messages, prod), daemon=True).start()
        w = watch(sup, b.store, topic, prod, timeout_s=args.timeout, stall_s=args.stall_seconds, t0=t0)
        if not prod.done.wait(600):
            prod.error = "the producer did not finish within 600 s"
        elapsed = time.monotonic() - t0
        stop_code = sup.stop() if sup.alive() else None
        stored, quarantined = b.store.positions(topic)
        acc = account(prod.positions, len(messages), stored, quarantined)
        return report(args, messages, prod, acc, sup, w, elapsed, stop_code)


def report(args, messages: list[Hostile], prod: Produced, acc: Accounting, sup: DaemonSupervisor, w: Watch,
           elapsed: float, stop_code: int | None) -> int:
    rows, examples = family_rows(messages, prod, acc)
    n = len(prod.positions)
    ids = set(prod.positions.values())
    stored = sum(1 for i in ids if acc.outcome[i] == "stored")
    quarantined = sum(1 for i in ids if acc.outcome[i] == "quarantined")
    lost = sum(1 for i in ids if acc.outcome[i] == "lost")
    off = sum(r[5] for r in rows)
    rows.append(["TOTAL", n, stored, quarantined, lost, off, len(prod.refused), ""])
    print()
    print_table(["family", "produced", "stored", "quarantined", "lost", "off-contract", "refused", "quarantine reasons"],
                rows)
    if examples:
        print("\noff-contract outcomes (family/variant: expected, got: count):")
        for text, count in sorted(examples.items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {text}: {count}")
    crashes = len(sup.exits)
    print(f"\ndaemon: {sup.starts} start(s), {crashes} crash(es){' (gave up restarting)' if sup.gave_up else ''}, "
          f"/healthz {sup.health_probes} probes, {sup.health_failures} failed, {sup.down_events} down event(s); "
          f"/readyz {dict(w.readyz)}; stop exit code {stop_code}; children left behind {len(sup.orphans)}")
    causes = collections.Counter(e.cause for e in sup.exits)
    for cause, count in causes.most_common(8):
        print(f"  exit x{count}: {cause}")
    if w.consumed_metric is not None:
        print(f"  sentinel_messages_consumed_total of the last daemon: {w.consumed_metric:.0f}")
    rate = f"{n / w.finished_s:.0f} msg/s" if w.finished_s else "did not finish"
    print(f"time: produce {prod.seconds:.1f} s; end to end {w.finished_s or elapsed:.1f} s ({rate}); "
          f"store {args.store}")
    failures = daemon_failures(sup, acc, lost) + [text for bad, text in [
        (prod.error, f"producer failed: {prod.error}"), (off, f"{off} off-contract"),
        (w.stalled, f"ingest stalled (no progress for {args.stall_seconds:g} s)"),
        (w.timed_out, f"not done within {args.timeout:g} s")] if bad]
    print(f"invariant stored + quarantined = produced: {stored} + {quarantined} = {stored + quarantined} "
          f"{'==' if stored + quarantined == n and not acc.duplicated else '!='} {n}")
    print("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--max-restarts", type=int, default=3, help="restarts of a daemon that exited (default 3)")
    ap.add_argument("--stall-seconds", type=float, default=60.0, help="no ingest progress for this long ends the run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="bound on the whole ingest (s)")
    ap.add_argument("--families", help="only these families (comma separated), e.g. to reproduce one")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (config, logs, SQLite file)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
