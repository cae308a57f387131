"""Incidents: opened by failing checks, deduplicated by fingerprint, acknowledged and resolved by
people; every transition is audited and announced through the notification outbox.

``engine.IncidentEngine`` is the door; ``lifecycle``, ``escalation``, ``silences`` and ``payload``
each hold one concern, and ``sentinel.storage.incidents`` every read and write."""
from .engine import IncidentChange, IncidentEngine, build_payload, fingerprint

__all__ = ["IncidentChange", "IncidentEngine", "build_payload", "fingerprint"]
