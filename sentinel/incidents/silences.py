"""Silences: incidents matching every matcher of an active silence open (or move) into the
``silenced`` state and notify nobody; when no silence covers them any more they go back to
``open`` and escalate as if just opened."""
from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Protocol, Sequence

from ..errors import NotFoundError, StateError
from ..storage.incidents import IncidentRecords, IncidentStore
from ..storage.repository import as_utc
from .matchers import Matcher, matcher_from_dict, matches_all, parse_matcher

MAX_SILENCE_SECONDS = 30 * 365 * 86400     # longer is a mistake (and past datetime's range soon after)
from .payload import SYSTEM_ACTOR, labels


class _Mover(Protocol):
    """What moves an incident between states (``Lifecycle``)."""

    def transition_in(self, tx: IncidentRecords, incident: dict[str, Any], action: str, actor: str,
                      note: str | None, now: dt.datetime, *, run_id: int | None = None,
                      detail: dict[str, Any] | None = None) -> tuple[int, tuple[str, ...]]: ...


def parse_silence(matchers: Any, duration: Any) -> tuple[list[Matcher], float | None]:
    """A silence request's matchers (``["pair=triage", "check=~decision_.*"]``) and duration
    (``"2h"`` or seconds) as the engine takes them; ValueError with a one-line reason."""
    from ..durations import parse_duration

    if not isinstance(matchers or [], list):
        raise ValueError("matchers must be a list of strings like \"pair=triage\"")
    parsed = [parse_matcher(str(m)) for m in matchers or []]
    seconds = parse_duration(duration) if duration is not None else None
    if seconds is not None and seconds > MAX_SILENCE_SECONDS:
        raise ValueError(f"a silence lasts at most 30 years, got {duration!r}")
    return parsed, seconds


def matching_silence(tx: IncidentRecords, labels: Mapping[str, Any], now: dt.datetime) -> int | None:
    """The id of an active silence covering ``labels``, if any."""
    for s in tx.silences(active_at=now):
        if matches_all([matcher_from_dict(m) for m in s["matchers"]], labels):
            return s["id"]
    return None


def _shown(silence: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A silence as the API and CLI show it: matchers as text, and whether it is active now."""
    return {**silence, "matchers": [str(matcher_from_dict(m)) for m in silence["matchers"]],
            "active": silence["starts_at"] <= now < silence["ends_at"]}


class Silences:
    """Adds, lists and expires silences, and moves incidents in and out of ``silenced``."""

    def __init__(self, incidents: IncidentStore, mover: _Mover):
        self.incidents = incidents
        self.mover = mover

    def add(self, matchers: Sequence[Matcher], *, author: str, reason: str, duration: float | None,
            ends_at: dt.datetime | None, starts_at: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
        """See ``IncidentEngine.add_silence``."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher (e.g. pair=triage)")
        if not (author or "").strip():
            raise ValueError("a silence needs an author")
        if not (reason or "").strip():
            raise ValueError("a silence needs a reason")
        start = as_utc(starts_at) if starts_at else now
        if ends_at is None:
            if duration is None or duration <= 0:
                raise ValueError(f"a silence needs a positive duration, got {duration!r}")
            ends_at = start + dt.timedelta(seconds=duration)
        ends_at = as_utc(ends_at)
        if ends_at <= start:
            raise ValueError("a silence must end after it starts")
        with self.incidents.begin() as tx:
            silence_id = tx.add_silence(matchers=[m.to_dict() for m in matchers], starts_at=start, ends_at=ends_at,
                                        author=author, reason=reason, now=now)
            moved = []
            if start <= now:
                for incident in tx.incidents(state="open", limit=None):
                    if matches_all(matchers, labels(incident)):
                        self.mover.transition_in(tx, incident, "silence", author, reason, now,
                                                 detail={"silence_id": silence_id})
                        moved.append(incident["id"])
            [silence] = tx.silences(silence_id=silence_id)
        return {**_shown(silence, now), "silenced": moved}

    def expire(self, silence_id: int, actor: str, now: dt.datetime) -> dict[str, Any]:
        """See ``IncidentEngine.expire_silence``."""
        with self.incidents.begin() as tx:
            found = tx.silences(silence_id=silence_id)
            if not found:
                raise NotFoundError("silence", silence_id)
            if found[0]["ends_at"] <= now:
                raise StateError(f"silence {silence_id} has already expired")
            tx.end_silence(silence_id, now)
        self.unsilence_expired(now, actor=actor, note=f"silence {silence_id} expired by {actor}")
        return self.list(now, active_only=False, silence_id=silence_id)[0]

    def list(self, now: dt.datetime, *, active_only: bool = True, silence_id: int | None = None
             ) -> list[dict[str, Any]]:
        with self.incidents.read() as tx:
            rows = tx.silences(ending_after=now if active_only else None, silence_id=silence_id)
        return [_shown(s, now) for s in rows]

    def unsilence_expired(self, now: dt.datetime, *, actor: str = SYSTEM_ACTOR, note: str = "silence expired") -> int:
        """Move every silenced incident no active silence covers back to ``open``; returns how many."""
        with self.incidents.read() as tx:
            ids = tx.ids_in_state("silenced")
        n = 0
        for incident_id in ids:          # one transaction each: one failing does not hold the others
            with self.incidents.begin() as tx:
                incident = tx.incident(incident_id)
                if incident is None or incident["state"] != "silenced" or matching_silence(tx, labels(incident), now):
                    continue
                self.mover.transition_in(tx, incident, "unsilence", actor, note, now)
                n += 1
        return n
