import datetime as dt

from sqlalchemy import inspect

from sentinel.sampling import Sampler
from sentinel.storage import open_store
from sentinel.storage.repository import LabelIn, QuarantineIn, SampleIn
from sentinel.storage.tables import metadata

from stores import store_url  # noqa: F401  (fixture)

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)


def sample(i, key=None, pair="p"):
    return SampleIn(pair=pair, msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i,
                    sample_key=key if key is not None else Sampler().key(pair, f"m{i}"),
                    inputs=[float(i)], attributes={"g": "a"})


def test_migration_creates_exactly_the_declared_schema(store_url):  # noqa: F811
    store = open_store(store_url)
    store.migrate()  # idempotent
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    names = set(inspect(store.engine).get_table_names())
    assert {"samples", "labels", "quarantine", "runs", "check_results", "incidents", "incident_events",
            "outbox", "alembic_version"} <= names


def test_ingest_dedupes_by_id_and_quarantines(store_url):  # noqa: F811
    store = open_store(store_url)
    r = store.ingest([sample(1), sample(2), sample(2)], [LabelIn("m1", "x", "l", 0, 5)],
                     [QuarantineIn("t", 0, 9, "invalid_json", "bad", "xx")], window=100, rate=1.0)
    assert (r.stored, r.duplicates, r.quarantined, r.labels) == (2, 1, 1, 1)
    r = store.ingest([sample(1), sample(3)], [], [QuarantineIn("t", 0, 9, "invalid_json", "bad", "xx")],
                     window=100, rate=1.0)
    assert (r.stored, r.duplicates) == (1, 1)
    assert store.count("samples") == 3 and store.count("quarantine") == 1
    run = store.create_run("p", "test", {})
    got = store.claim_window("p", run)
    assert sorted(s.msg_id for s in got) == ["m1", "m2", "m3"]
    assert {s.msg_id: s.label for s in got}["m1"] == "x"   # label joined by id
    assert store.pending_count("p") == 0


def test_window_keeps_the_smallest_keys_whatever_the_order(store_url):  # noqa: F811
    store = open_store(store_url)
    keys = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.05]
    r = store.ingest([sample(i, k) for i, k in enumerate(keys)], [], [], window=3, rate=1.0)
    assert r.evicted == len(keys) - 3   # seen but left out of the window
    # a redelivered evicted message is not let back into the window
    r = store.ingest([sample(0, 0.9)], [], [], window=3, rate=1.0)
    assert r.stored == 0
    run = store.create_run("p", "test", {})
    kept = sorted(s.msg_id for s in store.claim_window("p", run))
    assert kept == sorted(f"m{i}" for i, k in enumerate(keys) if k in (0.05, 0.1, 0.2))


def test_rate_sampling_is_deterministic_per_id(store_url):  # noqa: F811
    store = open_store(store_url)
    s = Sampler(rate=0.3, seed=1)
    batch = [sample(i, s.key("p", f"m{i}")) for i in range(2000)]
    r = store.ingest(batch, [], [], window=10_000, rate=0.3)
    assert 500 < r.stored < 700 and r.stored + r.not_sampled == 2000
    again = store.ingest(batch, [], [], window=10_000, rate=0.3)
    assert again.stored == 0


def test_failed_run_releases_its_window(store_url):  # noqa: F811
    store = open_store(store_url)
    store.ingest([sample(1), sample(2)], [], [], window=10, rate=1.0)
    run = store.create_run("p", "test", {})
    assert len(store.claim_window("p", run)) == 2
    store.release_window(run)
    assert store.pending_count("p") == 2
