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


def stratified(i, key, stratum):
    return SampleIn(pair="p", msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i, sample_key=key,
                    inputs=[float(i)], attributes={"region": stratum}, stratum=f"region={stratum}")


def test_stratified_window_keeps_a_rare_group_beside_a_common_one(store_url):  # noqa: F811
    store = open_store(store_url)
    common = [stratified(i, (i + 0.5) / 1000, "eu") for i in range(300)]          # small keys, plenty
    rare = [stratified(1000 + i, 0.9 + i / 1000, "us") for i in range(20)]        # large keys, few
    store.ingest(common + rare, [], [], window=50, rate=1.0)
    run = store.create_run("p", "test", {})
    got = store.claim_window("p", run)
    by_region = {}
    for s in got:
        by_region.setdefault(s.attributes["region"], []).append(s.msg_id)
    # unstratified, the 50 smallest keys would all be eu; per stratum, every us sample survives
    assert len(by_region["us"]) == 20 and len(by_region["eu"]) == 50
    assert sorted(by_region["eu"]) == sorted(f"m{i}" for i in range(50))


def test_strata_beyond_the_limit_share_one_window(store_url):  # noqa: F811
    store = open_store(store_url)
    batch = [stratified(i, (i + 0.5) / 100, f"r{i % 10}") for i in range(100)]
    r = store.ingest(batch, [], [], window=5, rate=1.0, max_strata=3)   # 10 regions, room for 3 + other
    from sqlalchemy import func, select
    from sentinel.storage.tables import samples
    with store.engine.connect() as c:
        strata = dict(c.execute(select(samples.c.stratum, func.count()).group_by(samples.c.stratum)).all())
    assert len(strata) == 4 and strata["(other)"] == 5 and all(n == 5 for n in strata.values())
    assert r.evicted == 80


def test_upgrading_an_older_schema_keeps_stored_samples(tmp_path):
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sentinel.storage.repository import MIGRATIONS, Store, make_engine

    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql(
            "INSERT INTO samples (pair, msg_id, ts, topic, partition, \"offset\", sample_key, inputs, attributes, "
            "stored_at) VALUES ('p', 'old-1', '2026-11-21 00:00:00', 't', 0, 1, 0.5, '[1.0]', '{}', '2026-11-21 00:00:00')")
    store = Store(engine)
    store.migrate()
    run = store.create_run("p", "test", {})
    assert [s.msg_id for s in store.claim_window("p", run)] == ["old-1"]
