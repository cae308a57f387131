"""Sentinel's tables (SQLAlchemy Core). The Alembic migration in ``migrations/versions`` creates
exactly these; ``tests/test_storage.py`` checks the two never drift apart."""
from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        MetaData, String, Table, Text, UniqueConstraint)

metadata = MetaData()

# A sampled traffic message. `sample_key` is the seeded hash in [0, 1) that decides both the rate
# sample and the bottom-k window (so a redelivered message gets the same decision); `run_id` is
# NULL while the sample waits in the pair's window and the run that used it afterwards.
# `inputs` is the row of typed arrays in sentinel.tensors' binary form (encode_row: dtype and shape
# kept, a few bytes of header per array); `text` the raw text the inputs were made from, if any.
samples = Table(
    "samples", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("pair", String(128), nullable=False),
    Column("msg_id", String(256), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("sample_key", Float, nullable=False),
    Column("inputs", LargeBinary, nullable=False),
    Column("text", Text),
    Column("attributes", JSON, nullable=False),
    Column("label", String(128)),
    Column("extra", JSON),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    # the sampling stratum (values of sampling.stratify_by); "" when sampling is not stratified
    Column("stratum", String(255), nullable=False, server_default=""),
    UniqueConstraint("pair", "msg_id", name="uq_samples_pair_msg"),
    # (pair, run_id) queries use this one too: a second index on its first two columns only cost
    # every insert its upkeep (a seventh of a stored sample's time in SQLite; migration 0009)
    Index("ix_samples_pair_run_stratum", "pair", "run_id", "stratum"),
)

# How many pending samples (run_id NULL) each pair's stratum holds: what the window needs to know
# per ingested batch, which a count over the samples' index took time growing with the window to
# find (14 ms at 200,000 pending samples, for every poll). Every change to the pending samples
# changes it by the number of rows that change, in the same transaction (Store.ingest, claim_window,
# release_window, finish_run), so it is exact on PostgreSQL with several replicas too.
pending_samples = Table(
    "pending_samples", metadata,
    Column("pair", String(128), primary_key=True),
    Column("stratum", String(255), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Ground truth arriving on the labels topic, joined to samples by msg_id at run time.
labels = Table(
    "labels", metadata,
    Column("msg_id", String(256), primary_key=True),
    Column("label", String(128), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

# Messages set aside with their reason. A row is one record's value at one position: unique on
# (topic, partition, offset, value_sha256), so a redelivery is stored once while a different
# message at a reused offset (a re-created topic, a restarted in-memory broker) is kept too.
# The sha256 of the exact value bytes rather than the record timestamp: timestamps are set by
# producers, optional (-1) and not unique, while the same bytes at the same position are, for
# anyone looking at the table, the same message. `raw` is the value as text, escaped to be storable.
quarantine = Table(
    "quarantine", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Column("value_sha256", String(64), nullable=False, server_default=""),
    UniqueConstraint("topic", "partition", "offset", "value_sha256", name="uq_quarantine_record"),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pair", String(128), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("n_samples", Integer, nullable=False, default=0),
    Column("record", JSON, nullable=False),
    Column("report_path", Text),
    Column("error", Text),
    Column("owner", String(255)),   # the replica running it (replicas.owner); NULL before 0007
    Index("ix_runs_pair_started", "pair", "started_at"),
)

check_results = Table(
    "check_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("check", String(128), nullable=False),
    Column("slice", String(255), nullable=False),
    Column("status", String(32), nullable=False),
    Column("value", Float),
    Column("warn", Float),
    Column("fail", Float),
    Column("n", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    # which candidate of a pair with several (``candidates:``) the result judges; NULL: the single one
    Column("candidate", String(64)),
    Index("ix_check_results_run", "run_id"),
)

incidents = Table(
    "incidents", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False),
    Column("pair", String(128), nullable=False),
    Column("check", String(128), nullable=False),
    Column("slice", String(255), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("first_run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("last_run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("occurrences", Integer, nullable=False, default=1),
    Column("evidence", JSON, nullable=False),
    Column("runbook_url", Text),
    Index("ix_incidents_fingerprint_state", "fingerprint", "state"),
)

incident_events = Table(
    "incident_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("incident_id", Integer, ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("run_id", Integer),
    Column("detail", JSON, nullable=False),
    Index("ix_incident_events_incident", "incident_id"),
)

# Transactional outbox: written in the same transaction as the incident transition it announces.
outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, ForeignKey("incident_events.id", ondelete="CASCADE"), nullable=False),
    Column("incident_id", Integer, nullable=False),
    Column("target", String(128), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),   # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("claimed_by", String(255)),   # the replica holding the delivery lease (until next_attempt_at)
    UniqueConstraint("idempotency_key", name="uq_outbox_idempotency"),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
)

# Flapping control: consecutive failing / passing runs per incident fingerprint, so "open after N
# failing runs" and "auto-resolve after M passing runs" survive restarts like everything else.
incident_streaks = Table(
    "incident_streaks", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("pair", String(128), nullable=False),
    Column("check", String(128), nullable=False),
    Column("fails", Integer, nullable=False, default=0),
    Column("passes", Integer, nullable=False, default=0),
    Column("last_run_id", Integer),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One escalation timer per incident: which tier was notified last, when the next step is due, and
# everyone notified so far (acknowledgement and resolution are announced to all of them). Stored,
# not held in memory, so a restarted daemon escalates on time.
escalations = Table(
    "escalations", metadata,
    Column("incident_id", Integer, ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", String(128)),
    Column("tier", Integer, nullable=False, default=0),
    Column("loop", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),     # active | stopped | done
    Column("next_at", DateTime(timezone=True)),
    Column("notified", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_escalations_status_next", "status", "next_at"),
)

# Silences: incidents matching every matcher while the silence is active open (or move) into the
# `silenced` state and notify nobody. Expiring a silence sets `ends_at`; rows are never deleted.
silences = Table(
    "silences", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("matchers", JSON, nullable=False),          # [{"name", "op", "value"}]
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("author", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_silences_ends", "ends_at"),
)

# One revalidation schedule per configured pair, in plain columns (nothing here is ever unpickled).
# `interval_seconds` is NULL only for a row carried over from APScheduler's job store (whose
# interval sat inside a pickle): the next start adopts the configured interval and keeps the time.
# A claim sets `lease_owner`/`lease_until` and advances `next_run_at` in one conditional update
# (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), so with several daemons each run happens once
# and a dead daemon's claim lapses when its lease does (Store.claim_due_schedules).
schedules = Table(
    "schedules", metadata,
    Column("pair", String(128), primary_key=True),
    Column("interval_seconds", Float),
    Column("next_run_at", DateTime(timezone=True)),
    Column("last_started_at", DateTime(timezone=True)),
    Column("last_finished_at", DateTime(timezone=True)),
    Column("lease_owner", String(255)),
    Column("lease_until", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_schedules_next_run", "next_run_at"),
)

# One row per running daemon (replica) on this store, its heartbeat renewed every third of the
# lease (replicas.lease_seconds). A row older than the lease is a dead replica's: its runs left
# 'running', its schedule leases and its registration are taken over by a live one. On SQLite a
# live row of another owner refuses the start (sentinel.storage.replicas).
replicas = Table(
    "replicas", metadata,
    Column("owner", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("api", String(255)),   # where its API listens (host:port), for /healthz and people
)
