import datetime as dt

import numpy as np
from sqlalchemy import func, inspect

from sentinel.sampling import Sampler
from sentinel.storage import open_store
from sentinel.storage.repository import LabelIn, QuarantineIn, SampleIn
from sentinel.storage.tables import metadata

from stores import store_url  # noqa: F401  (fixture)

NOW = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)


def sample(i, key=None, pair="p"):
    return SampleIn(pair=pair, msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i,
                    sample_key=key if key is not None else Sampler().key(pair, f"m{i}"),
                    inputs={"input": np.float32([i])}, attributes={"g": "a"})


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
                    inputs={"input": np.float32([i])}, attributes={"region": stratum}, stratum=f"region={stratum}")


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


def migrate_to(engine, revision, downgrade=False):
    """Bring the schema of ``engine`` to an older ``revision``; yields the connection, in its transaction."""
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sentinel.storage.repository import MIGRATIONS

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if downgrade else command.upgrade)(cfg, revision)
        yield conn


def test_upgrading_an_older_schema_keeps_stored_samples(tmp_path):
    from sentinel.storage.repository import Store, make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    for conn in migrate_to(engine, "0002"):
        conn.exec_driver_sql(
            "INSERT INTO samples (pair, msg_id, ts, topic, partition, \"offset\", sample_key, inputs, attributes, "
            "stored_at) VALUES ('p', 'old-1', '2026-11-21 00:00:00', 't', 0, 1, 0.5, '[1.0]', '{}', '2026-11-21 00:00:00')")
    store = Store(engine)
    store.migrate()
    run = store.create_run("p", "test", {})
    assert [s.msg_id for s in store.claim_window("p", run)] == ["old-1"]


def test_migration_0009_counts_the_pending_samples_already_stored(store_url):  # noqa: F811
    """A store upgraded to pending_samples starts from a count of what it holds (claimed samples
    are not pending), and ingest and claims carry on from there."""
    import datetime as dt

    import numpy as np

    from sentinel.storage.repository import Store, make_engine, stored_inputs
    from sentinel.storage.tables import pending_samples

    engine = make_engine(store_url)
    for conn in migrate_to(engine, "0008"):
        conn.exec_driver_sql("INSERT INTO runs (pair, trigger, status, started_at, record, n_samples) VALUES "
                             "('p', 't', 'pass', '2026-12-01 00:00:00', '{}', 0)")
        run = conn.exec_driver_sql("SELECT min(id) FROM runs").scalar_one()
        for i, (pair, stratum, claimed) in enumerate([("p", "a", False), ("p", "a", False), ("p", "a", True),
                                                       ("p", "b", False), ("q", "", False)]):
            conn.execute(samples_table.insert().values(
                pair=pair, msg_id=f"old-{i}", ts=dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc), topic="t",
                partition=0, offset=i, sample_key=0.5, inputs=stored_inputs({"input": np.float32([i])}),
                attributes={}, stored_at=dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc), stratum=stratum,
                run_id=run if claimed else None))
    store = Store(engine)
    store.migrate()
    with engine.connect() as conn:
        assert {(r.pair, r.stratum): r.n for r in conn.execute(select(pending_samples))} == \
            {("p", "a"): 2, ("p", "b"): 1, ("q", ""): 1}
    store.claim_window("q", store.create_run("q", "test", {}))
    with engine.connect() as conn:
        assert {(r.pair, r.stratum): r.n for r in conn.execute(select(pending_samples)) if r.n} == \
            {("p", "a"): 2, ("p", "b"): 1}
    for _ in migrate_to(engine, "0008", downgrade=True):   # and back: the table goes, the index returns
        pass
    from sqlalchemy import inspect
    assert "pending_samples" not in inspect(engine).get_table_names()
    assert "ix_samples_pair_run" in {i["name"] for i in inspect(engine).get_indexes("samples")}
    engine.dispose()


# -- what the store refuses, what it makes storable, and a store that is down ---------------------

import hashlib  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from sentinel.storage.repository import Store, StoreUnavailable, make_engine  # noqa: E402
from sentinel.storage.tables import quarantine, samples as samples_table  # noqa: E402


def refuse_poison(store, errcode="22023"):
    """Make the database itself refuse samples whose id starts with 'poison' (a trigger)."""
    with store.engine.begin() as c:
        if store.engine.dialect.name == "sqlite":
            c.exec_driver_sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON samples WHEN NEW.msg_id LIKE 'poison%' "
                              "BEGIN SELECT RAISE(ABORT, 'poison refused by a trigger'); END")
        else:
            c.exec_driver_sql(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN IF left(NEW.msg_id, 6) = 'poison' THEN "
                f"RAISE EXCEPTION 'poison refused by a trigger' USING ERRCODE = '{errcode}'; END IF; RETURN NEW; "
                "END $$ LANGUAGE plpgsql")
            c.exec_driver_sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON samples FOR EACH ROW "
                              "EXECUTE FUNCTION refuse_poison()")


def poison_batch():
    batch = [sample(i) for i in range(12)]
    batch[7] = SampleIn(pair="p", msg_id="poison-7", ts=NOW, topic="t", partition=0, offset=7,
                        sample_key=0.5, inputs={"input": np.float32([7])}, attributes={}, raw=b'{"id": "poison-7", "inputs": [7]}')
    return batch


def check_split(store, res):
    assert res.stored == 11 and res.labels == 1
    assert [(q.reason, q.offset) for q in res.rejected] == [("store_rejected", 7)]
    assert "poison refused by a trigger" in res.rejected[0].detail and "\n" not in res.rejected[0].detail
    rows = {r["reason"]: r for r in store.quarantined()}
    assert set(rows) == {"invalid_json", "store_rejected"}
    assert rows["store_rejected"]["raw"] == '{"id": "poison-7", "inputs": [7]}'
    assert rows["store_rejected"]["value_sha256"] == hashlib.sha256(b'{"id": "poison-7", "inputs": [7]}').hexdigest()
    assert store.count("samples") == 11 and store.count("labels") == 1


def test_a_row_the_database_refuses_is_quarantined_alone_and_the_rest_stored(store_url):  # noqa: F811
    store = open_store(store_url)
    refuse_poison(store)
    res = store.ingest(poison_batch(), [LabelIn("m1", "x", "l", 0, 5)],
                       [QuarantineIn("t", 0, 99, "invalid_json", "bad", "xx")], window=100, rate=1.0)
    check_split(store, res)
    # the same batch again (a redelivery): nothing is stored or quarantined twice
    again = store.ingest(poison_batch(), [], [QuarantineIn("t", 0, 99, "invalid_json", "bad", "xx")],
                         window=100, rate=1.0)
    assert again.stored == 0 and again.duplicates == 11 and len(again.rejected) == 1
    assert store.count("quarantine") == 2


@pytest.mark.postgres
def test_a_row_refused_with_an_operational_class_error_is_still_set_aside(store_url):  # noqa: F811
    # SQLSTATE 54000 (program limit exceeded) comes as OperationalError, the class of a lost
    # connection: the probe write shows the store is up, so the row, not the store, is at fault
    if not store_url.startswith("postgresql"):
        pytest.skip("a PL/pgSQL trigger with an SQLSTATE is PostgreSQL's")
    store = open_store(store_url)
    refuse_poison(store, errcode="54000")
    res = store.ingest(poison_batch(), [LabelIn("m1", "x", "l", 0, 5)],
                       [QuarantineIn("t", 0, 99, "invalid_json", "bad", "xx")], window=100, rate=1.0)
    check_split(store, res)


@pytest.mark.postgres
def test_a_row_that_ends_the_connection_every_time_is_set_aside_not_retried_forever(store_url):  # noqa: F811
    # a trigger that terminates its own backend on one id: each write of that row loses the
    # connection, while the store itself takes writes. Before, ingest raised StoreUnavailable on
    # it forever and never moved past the batch
    if not store_url.startswith("postgresql"):
        pytest.skip("terminating one's own backend from a trigger is PostgreSQL's")
    store = open_store(store_url)
    with store.engine.begin() as c:
        c.exec_driver_sql(
            "CREATE FUNCTION end_connection() RETURNS trigger AS $$ BEGIN IF left(NEW.msg_id, 6) = 'poison' THEN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(1); END IF; RETURN NEW; "
            "END $$ LANGUAGE plpgsql")
        c.exec_driver_sql("CREATE TRIGGER end_connection BEFORE INSERT ON samples FOR EACH ROW "
                          "EXECUTE FUNCTION end_connection()")
    res = store.ingest(poison_batch(), [LabelIn("m1", "x", "l", 0, 5)],
                       [QuarantineIn("t", 0, 99, "invalid_json", "bad", "xx")], window=100, rate=1.0)
    assert res.stored == 11 and res.labels == 1
    assert [(q.reason, q.offset) for q in res.rejected] == [("store_rejected", 7)]
    assert "terminating connection" in res.rejected[0].detail
    rows = {r["reason"]: r for r in store.quarantined()}
    assert rows["store_rejected"]["raw"] == '{"id": "poison-7", "inputs": [7]}'
    assert store.count("samples") == 11


def test_a_read_only_store_is_unavailable_and_nothing_is_set_aside(tmp_path):
    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").dispose()
    ro = Store(create_engine(f"sqlite:///file:{path}?mode=ro&uri=true"))
    with pytest.raises(StoreUnavailable, match="readonly database"):
        ro.ingest([sample(1), sample(2)], [], [QuarantineIn("t", 0, 9, "invalid_json", "bad", "xx")],
                  window=10, rate=1.0)
    rw = open_store(f"sqlite:///{path}")
    assert rw.count("samples") == 0 and rw.count("quarantine") == 0
    res = rw.ingest([sample(1), sample(2)], [], [QuarantineIn("t", 0, 9, "invalid_json", "bad", "xx")],
                    window=10, rate=1.0)    # the batch re-read once the store is back: nothing lost
    assert (res.stored, res.quarantined, res.rejected) == (2, 1, [])


def test_a_store_refusing_connections_is_unavailable_at_once():
    store = Store(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing"))
    with pytest.raises(StoreUnavailable) as e:
        store.ingest([sample(1)], [], [], window=10, rate=1.0)
    assert "refused" in e.value.problem.lower() and "\n" not in e.value.problem


def test_quarantine_keeps_a_different_message_at_a_reused_offset(store_url):  # noqa: F811
    store = open_store(store_url)
    first = QuarantineIn("t", 0, 5, "invalid_json", "bad", "first", hashlib.sha256(b"first").hexdigest())
    store.ingest([], [], [first], window=10, rate=1.0)
    store.ingest([], [], [first], window=10, rate=1.0)                       # a redelivery: kept once
    assert store.count("quarantine") == 1
    # offsets restarted (topic re-created): another message at offset 5 is kept beside the first
    store.ingest([], [], [QuarantineIn("t", 0, 5, "not_utf8", "bad", "second")], window=10, rate=1.0)
    assert sorted(r["raw"] for r in store.quarantined()) == ["first", "second"]


def test_quarantine_rows_of_hostile_messages_are_storable(store_url):  # noqa: F811
    store = open_store(store_url)
    q = QuarantineIn("t", 0, 1, "nul_character", "'id' \ud800 contains \x00", 'a\x00b\ud800c\\x00', "")
    store.ingest([], [], [q], window=10, rate=1.0)
    row = store.quarantined()[0]
    assert row["raw"] == "a\\x00b\\ud800c\\x00" and row["detail"] == "'id' \\ud800 contains \\x00"
    assert row["value_sha256"] == hashlib.sha256('a\x00b\ud800c\\x00'.encode("utf-8", "surrogatepass")).hexdigest()


def test_long_strata_are_shortened_deterministically_and_stay_distinct(store_url):  # noqa: F811
    store = open_store(store_url)
    long_a, long_b = "region=" + "x" * 300 + "a", "region=" + "x" * 300 + "b"
    batch = [SampleIn(pair="p", msg_id=f"m{i}", ts=NOW, topic="t", partition=0, offset=i, sample_key=i / 10,
                      inputs={"input": np.float32([1])}, attributes={}, stratum=(long_a, long_b)[i % 2]) for i in range(6)]
    res = store.ingest(batch, [], [], window=2, rate=1.0)
    with store.engine.connect() as c:
        strata = dict(c.execute(select(samples_table.c.stratum, func.count()).group_by(samples_table.c.stratum)).all())
    assert res.stored == 4 and len(strata) == 2 and all(len(s) == 255 for s in strata)
    assert all(n == 2 for n in strata.values())      # one bottom-k window per (shortened) stratum


def test_upgrading_to_0004_keys_existing_quarantine_rows_by_content(store_url):  # noqa: F811
    engine = make_engine(store_url)
    for conn in migrate_to(engine, "0003"):
        for off, raw in ((1, '{"id": 1'), (2, "plain")):
            conn.execute(text('INSERT INTO quarantine (topic, partition, "offset", reason, detail, raw, stored_at) '
                              "VALUES ('t', 0, :o, 'invalid_json', 'x', :r, :now)"), {"o": off, "r": raw, "now": NOW})
    store = Store(engine)
    store.migrate()
    with engine.connect() as c:
        got = dict(c.execute(select(quarantine.c.raw, quarantine.c.value_sha256)).all())
    assert got == {r: hashlib.sha256(r.encode()).hexdigest() for r in ('{"id": 1', "plain")}
    # a redelivery of an old row is recognised; a new message at its offset is kept
    store.ingest([], [], [QuarantineIn("t", 0, 1, "invalid_json", "x", '{"id": 1')], window=10, rate=1.0)
    store.ingest([], [], [QuarantineIn("t", 0, 1, "not_utf8", "x", "new")], window=10, rate=1.0)
    assert store.count("quarantine") == 3
    for _ in migrate_to(engine, "0003", downgrade=True):    # and back: the first row of each position is kept
        pass
    with engine.connect() as c:
        assert sorted(c.execute(select(text("raw")).select_from(text("quarantine"))).scalars()) == sorted(['{"id": 1', "plain"])


def test_sample_rows_written_past_sqlalchemy_are_the_rows_it_writes(tmp_path):
    """On SQLite the store hands sample rows to the driver itself (``_insert_samples``), each value
    through its column's bind processor: the stored bytes must be those of SQLAlchemy's insert,
    for timestamps, JSON null, nested and big-integer JSON, text and strata alike."""
    import sqlite3

    import numpy as np
    from sqlalchemy import insert

    from sentinel.storage import tables as tb
    from sentinel.storage.repository import _SAMPLE_COLUMNS, _insert_samples, stored_inputs

    now = dt.datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
    x = stored_inputs({"x": np.arange(3, dtype=np.float32)})
    rows = [("p", "a", now, "t", 0, 1, 0.25, x, None, {"region": "eu"}, None, None, now, ""),
            ("p", "b", now - dt.timedelta(days=400), "t", 3, 2**40, 0.5, x, "héllo", {"r": "é", "s": ""}, "1",
             {"meta": [1, 2.5, None], "big": 2**70}, now, "region=eu"),
            ("p", "c", now, "t", 0, 3, 0.75, x, None, {}, None, None, now, ""),   # timestamps repeated:
            ("p", "d", now - dt.timedelta(days=400), "t", 0, 4, 0.8, x, None, {}, None, None, now, "")]   # each once
    # the same instant in another zone: SQLite's processor writes its wall time
    plus2 = now.astimezone(dt.timezone(dt.timedelta(hours=2)))
    more = [("p", f"z{i}", ts, "t", 0, 10 + i, 0.1, x, None, {}, None, None, now, "") for i, ts in enumerate([now, plus2, now])]
    got = []
    for fast in (True, False):
        store = open_store(f"sqlite:///{tmp_path}/{fast}.db")
        for batch in (rows, more):
            with store.engine.begin() as conn:
                if fast:
                    _insert_samples(conn, batch)
                else:
                    conn.execute(insert(tb.samples), [dict(zip(_SAMPLE_COLUMNS, r)) for r in batch])
        got.append(sqlite3.connect(tmp_path / f"{fast}.db").execute("SELECT * FROM samples ORDER BY id").fetchall())
    assert got[0] == got[1] and len(got[0]) == 7
    assert got[0][5][3] != got[0][4][3]   # the +02:00 one's wall time
    assert open_store(f"sqlite:///{tmp_path}/True.db").pending_count("p") == 7
