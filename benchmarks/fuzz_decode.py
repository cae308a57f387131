"""Hostile traffic through the real decode -> store path: how many messages make ``read_batch``
raise (anything but a quarantine), and how many decoded rows the store then refuses, on SQLite and
PostgreSQL. Seeded; re-run it to compare two versions of the code (PYTHONPATH picks the code).

    PYTHONPATH=. python benchmarks/fuzz_decode.py [--n 50000] [--seed 9] [--backends sqlite postgres]

Each message goes through ``read_batch`` alone (so one raising message cannot hide another).
Decoded rows are then written with ``Store.ingest`` in batches of 500; a batch that raises is
split in halves until each row that raises is found, and counted as refused (a daemon would have
rewound that batch and retried it forever). A version of ``Store.ingest``
that sets refused rows aside itself reports them in ``IngestResult.rejected``; those are
counted as refused too. PostgreSQL: $SENTINEL_TEST_PG (default postgres@127.0.0.1:5432); a
fresh database is created and dropped.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import sys
import tempfile
import time
import uuid
from typing import Callable

PG_ADMIN = os.environ.get("SENTINEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PAIR_FEATURES = ("a", "b", "c")
YEAR_10000_MS = 253_402_300_800_000

# -- hostile messages -------------------------------------------------------------------------------
# Each family returns (value bytes, Kafka timestamp in ms or None). They cover the cases issue 9
# lists (measured on this machine: docs in /work/shared/PITFALLS.md) and plain random bytes.


def _valid(rng: random.Random, i: int) -> dict:
    msg = {"id": f"v{i}", "inputs": [round(rng.uniform(-5, 5), 3) for _ in PAIR_FEATURES],
           "attributes": {"region": rng.choice(["eu", "us", "apac"]), "device": rng.choice(["ios", "web"])}}
    if rng.random() < 0.5:
        msg["label"] = rng.choice([0, 1, "benign", "malignant"])
    if rng.random() < 0.5:
        msg["ts"] = rng.choice(["2026-11-21T10:00:00Z", 1_700_000_000_000])
    if rng.random() < 0.5:
        msg["served_latency_ms"] = rng.uniform(0, 50)
    return msg


def _splice(msg: dict, key: str, raw: bytes) -> bytes:
    """The message with field ``key`` set to a raw JSON fragment (things json.dumps cannot write)."""
    msg.pop(key, None)
    body = json.dumps(msg).encode()
    return body[:-1] + b', "' + key.encode() + b'": ' + raw + b"}"


def _deep(rng: random.Random, i: int) -> bytes:
    n = rng.choice([40, 200, 999, 1500, 5000, 100_000])
    where = rng.choice(["inputs", "extra", "attributes"])
    return _splice(_valid(rng, i), where if where != "extra" else "meta", b"[" * n + b"]" * n)


def _huge_int(rng: random.Random, i: int) -> bytes:
    digits = rng.choice([20, 40, 309, 400, 4301, 6000])
    big = (b"-" if rng.random() < 0.3 else b"") + b"1" + b"0" * digits
    field = rng.choice(["inputs", "label", "id", "meta", "ts", "attr"])
    msg = _valid(rng, i)
    if field == "inputs":
        return _splice(msg, "inputs", b"[1, " + big + b", 2]")
    if field == "attr":
        return _splice(msg, "attributes", b'{"region": ' + big + b"}")
    return _splice(msg, field, big)


def _nonfinite(rng: random.Random, i: int) -> bytes:
    lit = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
    field = rng.choice(["inputs", "meta", "ts", "label", "nested"])
    msg = _valid(rng, i)
    if field == "inputs":
        return _splice(msg, "inputs", b"[1, " + lit + b", 2]")
    if field == "nested":
        return _splice(msg, "meta", b'{"x": [1, {"y": ' + lit + b"}]}")
    return _splice(msg, field, lit)


def _text_field(rng: random.Random, i: int, raw_text: bytes) -> bytes:
    """``raw_text`` (already JSON-string content) placed in one of the text fields."""
    field = rng.choice(["id", "attr_value", "attr_key", "meta", "meta_key", "label", "model"])
    msg = _valid(rng, i)
    s = b'"' + raw_text + b'"'
    if field == "attr_value":
        return _splice(msg, "attributes", b'{"region": ' + s + b"}")
    if field == "attr_key":
        return _splice(msg, "attributes", b"{" + s + b': "eu"}')
    if field == "meta_key":
        return _splice(msg, "meta", b"{" + s + b": 1}")
    return _splice(msg, field if field != "meta" else "meta", s)


def _surrogate(rng: random.Random, i: int) -> bytes:
    raw = rng.choice([b"a\\ud800b", b"\\udfff", b"x\\udc80", b"\xed\xa0\x80", b"ok\xed\xbf\xbf"])
    return _text_field(rng, i, raw)


def _nul(rng: random.Random, i: int) -> bytes:
    return _text_field(rng, i, rng.choice([b"a\\u0000b", b"\\u0000", b"a\x00b"]))


def _not_utf8(rng: random.Random, i: int) -> bytes:
    return _text_field(rng, i, rng.choice([b"caf\xe9", b"\xff\xfe", b"\xc3", b"\x80abc", b"\xf5\x80\x80\x80"]))


def _utf16(rng: random.Random, i: int) -> bytes:
    enc = rng.choice(["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32", "utf-8-sig"])
    return json.dumps(_valid(rng, i)).encode(enc)


def _long_text(rng: random.Random, i: int) -> bytes:
    n = rng.choice([129, 200, 257, 300, 2000, 100_000])
    s = rng.choice("xé€😀") * n
    msg = _valid(rng, i)
    field = rng.choice(["label", "id", "attr", "attr2", "meta"])
    if field == "attr":
        msg["attributes"]["region"] = s
    elif field == "attr2":
        msg["attributes"] = {"region": s[:150], "device": s[:150]}
    elif field == "meta":
        msg["meta"] = s
    else:
        msg[field] = s
    return json.dumps(msg, ensure_ascii=False).encode()


def _label(rng: random.Random, i: int) -> bytes:
    msg = _valid(rng, i)
    msg["label"] = rng.choice(["²", "١", "①", "01", "1", "-1", "1.0", 1.5, True, False, None, [], {}, "",
                               "9" * 50, 10**30, -3, 1.0])
    return json.dumps(msg).encode()


def _bad_ts(rng: random.Random, i: int) -> tuple[bytes, int | None]:
    msg = _valid(rng, i)
    choice = rng.randrange(6)
    if choice == 0:
        msg["ts"] = rng.choice(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00",
                                "10000-01-01T00:00:00Z", "2026-02-30T00:00:00Z", ""])
    elif choice == 1:
        msg["ts"] = rng.choice([1e20, -1e20, 2**63, -(2**63), 253402300800000, -62135596800001, 1e308])
    elif choice == 2:
        msg.pop("ts", None)
        return json.dumps(msg).encode(), YEAR_10000_MS + rng.randrange(10**12)
    elif choice == 3:
        msg["ts"] = rng.choice([True, [], {}, "now"])
    elif choice == 4:
        msg.pop("ts", None)
        return json.dumps(msg).encode(), rng.choice([-1, -(2**62), 2**62])
    else:
        msg["ts"] = "2026-11-21T10:00:00" + rng.choice(["+25:00", "+23:59", "Z", "-00:00"])
    return json.dumps(msg).encode(), None


def _typed(rng: random.Random, i: int) -> bytes:
    """Values of the wrong JSON type: numbers as strings, booleans, non-string attributes."""
    msg = _valid(rng, i)
    choice = rng.randrange(5)
    if choice == 0:
        msg["inputs"] = ["1.5", 2, 3]
    elif choice == 1:
        msg["inputs"] = [True, False, 1]
    elif choice == 2:
        msg["inputs"] = {"a": "1", "b": True, "c": 3}
    elif choice == 3:
        msg["attributes"] = {"region": rng.choice([1, 1.5, True, None, [1], {"x": 1}, 10**25])}
    else:
        msg["id"] = rng.choice([1, True, 1.5, None, [], "", " "])
    return json.dumps(msg).encode()


def _random_bytes(rng: random.Random, _i: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))


def _mutated(rng: random.Random, i: int) -> bytes:
    b = bytearray(json.dumps(_valid(rng, i)).encode())
    for _ in range(rng.randrange(1, 4)):
        pos = rng.randrange(len(b))
        op = rng.randrange(3)
        if op == 0:
            b[pos] = rng.randrange(256)
        elif op == 1:
            b.insert(pos, rng.choice(b"[]{}\",:\\0e-+.\x00"))
        else:
            del b[pos]
    return bytes(b)


FAMILIES: dict[str, Callable[[random.Random, int], "bytes | tuple[bytes, int | None]"]] = {
    "valid": lambda rng, i: json.dumps(_valid(rng, i)).encode(),
    "deep": _deep, "huge_int": _huge_int, "non_finite": _nonfinite, "surrogate": _surrogate, "nul": _nul,
    "not_utf8": _not_utf8, "utf16_32": _utf16, "long_text": _long_text, "label": _label, "bad_ts": _bad_ts,
    "typed": _typed, "random_bytes": _random_bytes, "mutated": _mutated,
}


def hostile_records(n: int, seed: int, topic: str = "traffic") -> list:
    """``n`` records, about a third valid, the rest drawn evenly from the hostile families."""
    from sentinel.sources.base import RawRecord

    rng = random.Random(seed)
    names = list(FAMILIES)
    out = []
    for i in range(n):
        name = "valid" if rng.random() < 0.3 else rng.choice(names[1:])
        got = FAMILIES[name](rng, i)
        value, ts_ms = got if isinstance(got, tuple) else (got, 1_700_000_000_000 + i)
        out.append((name, RawRecord(topic, 0, i, None, value, ts_ms)))
    return out


# -- the measurement --------------------------------------------------------------------------------

def decode_each(records: list) -> tuple[list, list, collections.Counter, collections.Counter]:
    from sentinel.daemon import read_batch
    from sentinel.messages import PairShape
    from sentinel.sampling import Sampler

    shapes = {"triage": PairShape("triage", (3,), ("benign", "malignant"), PAIR_FEATURES)}
    sampler = Sampler(rate=1.0, stratify_by=("region", "device"))
    samples, quarantined, raised, reasons = [], [], collections.Counter(), collections.Counter()
    for _family, r in records:
        try:
            b = read_batch([r], shapes, sampler, None)
            s, q = b.samples, b.bad
        except Exception as exc:   # noqa: BLE001 - what we are counting
            raised[type(exc).__name__] += 1
            continue
        samples.extend(s)
        quarantined.extend(q)
        reasons.update(x.reason for x in q)
    return samples, quarantined, raised, reasons


def _refused_rows(store, items: list, refused: collections.Counter) -> int:
    """Write ``items`` (samples and quarantine rows); where the store raises, split in halves until
    each refused row is found and counted. Returns the number of samples stored."""
    from sentinel.storage.repository import QuarantineIn

    rows = [x for x in items if not isinstance(x, QuarantineIn)]
    qrows = [x for x in items if isinstance(x, QuarantineIn)]
    try:
        res = store.ingest(rows, [], qrows, window=10**9, rate=1.0)
    except Exception as exc:   # noqa: BLE001 - what we are counting
        if len(items) > 1:
            mid = len(items) // 2
            return _refused_rows(store, items[:mid], refused) + _refused_rows(store, items[mid:], refused)
        msg = str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else ""
        refused[f"{type(exc).__name__}: {msg[:50]}" + (" (a quarantine row)" if qrows else "")] += 1
        return 0
    for q in getattr(res, "rejected", []) or []:   # a store that sets refused rows aside itself
        refused[q.detail[:60]] += 1
    return res.stored


def store_each(url: str, samples: list, quarantined: list) -> tuple[int, collections.Counter, float]:
    from sentinel.storage.repository import open_store

    store = open_store(url)
    refused: collections.Counter = collections.Counter()
    stored = 0
    t0 = time.perf_counter()
    batch = 500
    chunks = itertools.zip_longest([samples[i:i + batch] for i in range(0, len(samples), batch)],
                                   [quarantined[i:i + batch] for i in range(0, len(quarantined), batch)],
                                   fillvalue=[])
    for rows, qrows in chunks:
        stored += _refused_rows(store, [*qrows, *rows], refused)
    seconds = time.perf_counter() - t0
    store.dispose()
    return stored, refused, seconds


def _pg_url() -> tuple[str | None, str]:
    from sqlalchemy import create_engine, text

    name = f"sentinel_fuzz_{uuid.uuid4().hex[:8]}"
    try:
        eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        eng.dispose()
    except Exception as exc:   # noqa: BLE001
        return None, f"PostgreSQL not reachable ({type(exc).__name__})"
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def _pg_drop(name: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def _deep_message_ms() -> float:
    """Milliseconds read_batch takes on issue 9's reproduction (it raised RecursionError before)."""
    import timeit

    from sentinel.sources.base import RawRecord

    rec = RawRecord("traffic", 0, 0, None, b'{"id":"x","inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None)

    def once() -> None:
        try:
            decode_each([("deep", rec)])
        except Exception:   # noqa: BLE001 - timed either way
            pass

    return min(timeit.repeat(once, number=1, repeat=5)) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--backends", nargs="*", default=["sqlite", "postgres"])
    args = ap.parse_args()
    import sentinel

    print(f"code: {os.path.dirname(sentinel.__file__)}; {args.n} messages, seed {args.seed}")
    records = hostile_records(args.n, args.seed)
    t0 = time.perf_counter()
    samples, quarantined, raised, reasons = decode_each(records)
    dt_decode = time.perf_counter() - t0
    print(f"\nread_batch: {len(samples)} decoded, {len(quarantined)} quarantined, "
          f"{sum(raised.values())} raised something else ({dt_decode:.1f} s)")
    for name, k in raised.most_common():
        print(f"  raised {name:28} {k:7d}")
    for name, k in reasons.most_common():
        print(f"  quarantined {name:23} {k:7d}")
    rows = [("decode", "raised (not a quarantine)", sum(raised.values()))]
    rows.append(("decode", "the issue's 100,000-deep message, best of 5 (ms)", f"{_deep_message_ms():.2f}"))
    for backend in args.backends:
        if backend == "sqlite":
            tmp = tempfile.mkdtemp(prefix="fuzz-decode-")
            url, cleanup = f"sqlite:///{tmp}/fuzz.db", None
        else:
            url, cleanup = _pg_url()
            if url is None:
                print(f"\n{backend}: skipped: {cleanup}")
                continue
        try:
            stored, refused, seconds = store_each(url, samples, quarantined)
        finally:
            if backend == "postgres" and cleanup:
                _pg_drop(cleanup)
        print(f"\n{backend}: {stored} stored, {sum(refused.values())} refused of {len(samples)} decoded "
              f"({seconds:.1f} s)")
        for why, k in refused.most_common(12):
            print(f"  refused {why:60} {k:6d}")
        rows.append((backend, "decoded rows refused by the store", sum(refused.values())))
    print("\n| stage | count | n |\n|---|---|---|")
    for stage, what, k in rows:
        print(f"| {stage} | {what} | {k} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
