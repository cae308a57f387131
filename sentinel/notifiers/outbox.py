"""The transactional outbox: notifications are rows written with the incident transition they
announce, and delivered afterwards by ``OutboxDispatcher``.

Why an outbox: sending from inside the transition would either notify about a change that then
rolls back, or commit a change whose notification is lost when the process dies. Writing the
notification as a row in the same transaction makes "transition happened" and "notification is
owed" one atomic fact; the dispatcher then delivers it at least once.

Delivery guarantees, from Sentinel's side:
- A row is *claimed* before it is sent: it is read with FOR UPDATE SKIP LOCKED, a conditional
  UPDATE pushes its ``next_attempt_at`` a lease into the future and records the replica in
  ``claimed_by``, and only the dispatcher whose UPDATE changed the row sends it. Two dispatchers
  (two replicas, or an old and a restarted process) never send the same row at the same time; a
  dead replica's claim lapses with its lease (``replicas.lease_seconds``) and is sent by another.
- A row is marked ``sent`` once, and a sent row is never picked up again.
- The one window left is a crash after the receiver accepted a request and before ``sent`` was
  committed: when the lease runs out the row is sent again. Every request carries the row's
  ``Idempotency-Key`` (``incident_id:event_id:target``), the same on every attempt, so receivers
  drop such repeats. Together: exactly-once *effect* for receivers that dedupe by the key.
"""
from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Any, Callable, Iterable, Mapping

from sqlalchemy import Connection

from ..redact import scrub
from ..storage.outbox import FAILED, PENDING, SENT, OutboxRecords, OutboxStore, row_dict  # noqa: F401
from ..storage.repository import Store, as_utc, utcnow
from .base import DeliveryError, Notifier

log = logging.getLogger(__name__)

_MAX_ERROR = 1000


def idempotency_key(incident_id: int, event_id: int, target: str) -> str:
    return f"{incident_id}:{event_id}:{target}"


def enqueue(conn: Connection, *, incident_id: int, event_id: int, targets: Iterable[str], payload: dict[str, Any],
            now: dt.datetime) -> list[int]:
    """Owe ``payload`` to every target: one ``pending`` outbox row each, due at once.

    Call it with the connection of the transaction that records the incident event, so the
    notification exists if and only if the event does.
    """
    rows = OutboxRecords(conn)
    ids = []
    for target in dict.fromkeys(targets):  # dedupe, keep order
        ids.append(rows.add(incident_id=incident_id, event_id=event_id, target=target,
                            idempotency_key=idempotency_key(incident_id, event_id, target), payload=payload, now=now))
    return ids


class OutboxDispatcher:
    """Sends due outbox rows through the configured notifiers, with retries and backoff.

    Args:
        store: the Sentinel store holding the ``outbox`` table.
        notifiers: notifier by target name; a row whose target has none is marked ``failed``.
        clock: returns the current UTC time (injected by tests to step through backoff).
        max_attempts: attempts per row before it is ``failed``, one number or per target
            (targets not in the mapping get 20, about an hour of retries at the default backoff).
        backoff_seconds, max_backoff_seconds: the n-th retry waits
            ``min(max_backoff, backoff * 2**(n-1)) * uniform(0.5, 1.5)``; the jitter keeps many
            rows failing together (a receiver outage) from retrying in lockstep.
        rng: the jitter source (seed it in tests).
        on_outcome: called as ``on_outcome(target, "sent" | "retry" | "failed")`` after each
            attempt's outcome is recorded (feeds ``sentinel_notifications_total``).
        lease_seconds: how long a claim keeps other dispatchers off a row. It must be longer than
            any notifier's timeout: a claim that expires mid-send lets another dispatcher send the
            row again (harmless for receivers that dedupe, but noisy).
    """

    def __init__(self, store: Store, notifiers: Mapping[str, Notifier], *, clock: Callable[[], dt.datetime] = utcnow,
                 max_attempts: Mapping[str, int] | int = 20, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 300, rng: random.Random | None = None,
                 on_outcome: Callable[[str, str], None] | None = None, lease_seconds: float = 120.0):
        self.store = store
        self.outbox = OutboxStore(store)
        self.notifiers = dict(notifiers)
        self._clock = clock
        self._max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._rng = rng or random.Random()
        self._on_outcome = on_outcome
        self.lease = dt.timedelta(seconds=lease_seconds)

    def max_attempts_for(self, target: str) -> int:
        if isinstance(self._max_attempts, int):
            return self._max_attempts
        return int(self._max_attempts.get(target, 20))

    def _now(self) -> dt.datetime:
        # SQLite stores datetimes without their offset; always hand it UTC so comparisons hold.
        return as_utc(self._clock())

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch_due(self, limit: int = 100) -> dict[str, int]:
        """Claim and attempt pending rows that are due, oldest first, one at a time (each claim
        its own short transaction, so a lease covers one send), at most ``limit``.

        Returns counts ``{"sent", "retry", "failed", "skipped"}``; ``skipped`` stays 0 here (rows
        another dispatcher holds are passed over inside the claim) and is kept for callers.
        """
        counts = {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}
        now = self._now()
        lease_until = now + self.lease
        for _ in range(limit):
            row = self.outbox.claim_next(getattr(self.store, "owner", None), now, lease_until)
            if row is None:
                break
            outcome = self._attempt(row, lease_until)
            counts[outcome] += 1
            self._report(row.target, outcome)
        return counts

    def _attempt(self, row: Any, lease_until: dt.datetime) -> str:
        target = row.target
        attempts = row.attempts + 1
        notifier = self.notifiers.get(target)
        if notifier is None:
            self._finish(row.id, lease_until, status=FAILED, attempts=row.attempts,
                         last_error=f"no notifier is configured for target {target!r}")
            return "failed"
        try:
            notifier.send(row.payload, idempotency_key=row.idempotency_key)
        except DeliveryError as exc:
            error, retryable, retry_after = scrub(str(exc)), exc.retryable, exc.retry_after
        except Exception as exc:  # a bug in a (possibly user-written) notifier: retry, but say so
            log.exception("notifier %s raised unexpectedly for %s", target, row.idempotency_key)
            # str(exc) of a user's notifier may repeat its URL or key: scrub what is stored and shown
            error, retryable, retry_after = scrub(f"{target}: unexpected {type(exc).__name__}: {exc}"), True, None
        else:
            self.outbox.mark_sent(row.id, self._now(), attempts)
            return "sent"

        if not retryable or attempts >= self.max_attempts_for(target):
            log.warning("notification %s to %s failed after %d attempt(s): %s", row.idempotency_key, target,
                        attempts, error)
            self._finish(row.id, lease_until, status=FAILED, attempts=attempts, last_error=error)
            return "failed"
        delay = self.backoff(attempts)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_seconds))
        log.info("notification %s to %s failed (attempt %d), retrying in %.1fs: %s", row.idempotency_key, target,
                 attempts, delay, error)
        self._finish(row.id, lease_until, status=PENDING, attempts=attempts, last_error=error,
                     next_attempt_at=self._now() + dt.timedelta(seconds=delay))
        return "retry"

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (exponential, with jitter)."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempts - 1))
        return base * (0.5 + self._rng.random())

    def _finish(self, row_id: int, lease_until: dt.datetime, *, status: str, attempts: int, last_error: str,
                next_attempt_at: dt.datetime | None = None) -> None:
        values: dict[str, Any] = {"status": status, "attempts": attempts, "last_error": last_error[:_MAX_ERROR]}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        # Fenced on our lease (another dispatcher that re-claimed the row owns its outcome).
        self.outbox.finish(row_id, lease_until, values)

    def _report(self, target: str, outcome: str) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(target, outcome)
        except Exception:  # a metrics hook must never stop deliveries
            log.exception("on_outcome hook failed")

    # -- visibility ----------------------------------------------------------------------------
    def pending_count(self) -> int:
        """Rows still owed (including those waiting for a retry)."""
        return self.outbox.pending_count()

    def failed(self, limit: int = 100) -> list[dict[str, Any]]:
        """Rows given up on, newest first, with their attempts and last error."""
        return self.outbox.failed(limit)
