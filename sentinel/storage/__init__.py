"""Storage: SQLAlchemy 2 tables, the Alembic migrations, and every read and write Sentinel makes,
behind its classes: ``repository.Store`` (samples, labels, quarantine, runs),
``incidents.IncidentStore`` (incidents, their audit events, streaks, escalation timers, silences)
and ``outbox.OutboxStore`` (the notification outbox)."""
from .repository import Store, open_store  # noqa: F401
