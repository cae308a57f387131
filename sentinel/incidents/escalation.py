"""Escalation policies (``alerts/*.yaml``): who is notified about an incident, and when.

A policy file::

    policies:
      - name: triage-oncall
        match: ["pair=triage"]            # label matchers (see matchers.py); none = every incident
        tiers:
          - targets: [oncall-slack]       # names under `notifiers:` in sentinel.yaml
            delay: 10m                    # how long this tier has to acknowledge before the next
          - targets: [pagerduty]
            delay: 20m
          - targets: [ml-lead-email]      # the last tier may omit delay (escalation stops there)
        repeat: 1                         # then start again at the first tier, this many times

The first policy whose matchers all match an incident applies; an incident no policy matches is
announced to every configured notifier at once. Tier 1 is notified when the incident opens; each
later tier when the previous tier's delay has passed without an acknowledgement. Acknowledging
stops the escalation; acknowledgement and resolution are announced to everyone notified so far.
``Escalator`` (below) keeps each incident's timer in the ``escalations`` table, so it survives
restarts.
"""
from __future__ import annotations

import datetime as dt
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pydantic import Field

from ..config import Strict, load_config, read_yaml, validate_file
from ..config_files import peek_yaml
from ..durations import parse_duration
from ..errors import ConfigError
from ..notifiers.outbox import enqueue
from ..storage.incidents import IncidentRecords, IncidentStore
from ..storage.repository import as_utc
from ..suggest import did_you_mean
from .matchers import Matcher, matches_all, parse_matcher
from ..links import Links
from .payload import SYSTEM_ACTOR, build_payload, iso, labels


class _TierSpec(Strict):
    targets: list[str] = Field(min_length=1)
    delay: str | float | None = None


class _PolicySpec(Strict):
    name: str = Field(min_length=1)
    match: list[str] = Field(default_factory=list)
    tiers: list[_TierSpec] = Field(min_length=1)
    repeat: int = Field(0, ge=0)


class _PolicyFile(Strict):
    policies: list[_PolicySpec] = Field(min_length=1)


@dataclass(frozen=True)
class Tier:
    targets: tuple[str, ...]
    delay: float | None          # seconds this tier has before the next is notified; None = final


@dataclass(frozen=True)
class EscalationPolicy:
    name: str
    matchers: tuple[Matcher, ...]
    tiers: tuple[Tier, ...]
    repeat: int = 0

    def applies_to(self, labels: Mapping[str, Any]) -> bool:
        return matches_all(self.matchers, labels)

    def next_step(self, tier: int, loop: int) -> tuple[int, int] | None:
        """The (tier, loop) notified after ``tier`` of ``loop`` once its delay passes, or None."""
        if self.tiers[tier].delay is None:
            return None
        if tier + 1 < len(self.tiers):
            return tier + 1, loop
        if loop < self.repeat:
            return 0, loop + 1
        return None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for tier in self.tiers for t in tier.targets))


def is_policy_file(path: str | Path, raw: Any = None) -> bool:
    """A YAML file is an escalation policy file (not a daemon config) when it has a top-level
    ``policies`` key, or, if it cannot be read as a mapping, when it lives in an ``alerts`` folder."""
    if isinstance(raw, dict):
        return "policies" in raw and "pairs" not in raw
    return Path(path).parent.name == "alerts"


def parse_policies(raw: Any, *, source: str, targets: Iterable[str] | None) -> list[EscalationPolicy]:
    """Validate one policy file's content. ``targets`` are the configured notifier names (None:
    do not check them). Raises ConfigError naming the file and key on the first problem."""
    spec = validate_file(_PolicyFile, raw, source, "a mapping with a 'policies' list")
    known = sorted(set(targets)) if targets is not None else None
    out, names = [], set()
    for i, p in enumerate(spec.policies):
        where = f"policies[{i}]"
        if p.name in names:
            raise ConfigError(source, f"{where}.name", f"duplicate policy name {p.name!r}")
        names.add(p.name)
        matchers = []
        for j, text in enumerate(p.match):
            try:
                matchers.append(parse_matcher(text))
            except ValueError as exc:
                raise ConfigError(source, f"{where}.match[{j}]", str(exc)) from None
        tiers = []
        for j, t in enumerate(p.tiers):
            tw = f"{where}.tiers[{j}]"
            for k, target in enumerate(t.targets):
                if known is not None and target not in known:
                    hint = did_you_mean(target, known)
                    listed = ", ".join(known) if known else "none"
                    raise ConfigError(source, f"{tw}.targets[{k}]",
                                      f"unknown target {target!r}{hint}; configured notifiers: {listed}")
            delay = None
            if t.delay is not None:
                try:
                    delay = parse_duration(t.delay)
                except ValueError as exc:
                    raise ConfigError(source, f"{tw}.delay", str(exc)) from None
                if delay < 0:
                    raise ConfigError(source, f"{tw}.delay", f"negative delay {t.delay!r}; a delay is the time "
                                                             "this tier has to acknowledge, 0 or more")
            if j > 0 and tiers[j - 1].delay is None:
                raise ConfigError(source, tw, f"unreachable tier: {where}.tiers[{j - 1}] has no delay, so "
                                              "escalation stops there (give it a delay)")
            tiers.append(Tier(tuple(dict.fromkeys(t.targets)), delay))
        if p.repeat and tiers[-1].delay is None:
            raise ConfigError(source, f"{where}.repeat", f"repeat {p.repeat} needs a delay on the last tier "
                                                         f"({where}.tiers[{len(tiers) - 1}])")
        out.append(EscalationPolicy(p.name, tuple(matchers), tuple(tiers), p.repeat))
    return out


def load_policy_file(path: str | Path, *, targets: Iterable[str] | None) -> list[EscalationPolicy]:
    return parse_policies(read_yaml(path), source=str(path), targets=targets)


def load_policies(pattern: str | None, *, base_dir: str | Path, targets: Iterable[str],
                  source: str = "<config>") -> list[EscalationPolicy]:
    """Every policy from the files matching ``pattern`` (a path or glob, relative to ``base_dir``),
    in file-name order. A pattern that matches nothing is an error: a typo must not silently
    leave incidents without escalation."""
    if not pattern:
        return []
    p = Path(pattern).expanduser()
    full = p if p.is_absolute() else Path(base_dir) / p
    files = sorted(glob.glob(str(full))) if glob.has_magic(str(full)) else ([str(full)] if full.exists() else [])
    if not files:
        raise ConfigError(source, "escalation", f"no policy file matches {pattern!r} (looked in {Path(base_dir)})")
    targets = list(targets)
    policies: list[EscalationPolicy] = []
    seen: dict[str, str] = {}
    for f in files:
        for pol in load_policy_file(f, targets=targets):
            if pol.name in seen:
                raise ConfigError(f, "policies", f"policy {pol.name!r} is also defined in {seen[pol.name]}")
            seen[pol.name] = f
            policies.append(pol)
    return policies


def policy_for(policies: Sequence[EscalationPolicy], labels: Mapping[str, Any]) -> EscalationPolicy | None:
    return next((p for p in policies if p.applies_to(labels)), None)


def configs_naming(policy_file: str) -> list[Any]:
    """Daemon configs near ``policy_file`` (the current folder, the policy folder's parent, and a
    ``deploy/`` folder in either) whose ``escalation`` pattern matches it."""
    target = Path(policy_file).resolve()
    folders = {Path.cwd(), target.parent.parent, Path.cwd() / "deploy", target.parent.parent / "deploy"}
    found = []
    for folder in sorted(folders):
        for candidate in sorted(folder.glob("*.y*ml")):
            raw = peek_yaml(candidate)
            if not isinstance(raw, dict) or not isinstance(raw.get("escalation"), str) or "pairs" not in raw:
                continue
            pattern = Path(raw["escalation"]).expanduser()
            pattern = pattern if pattern.is_absolute() else candidate.resolve().parent / pattern
            if target in {Path(m).resolve() for m in glob.glob(str(pattern))}:
                try:
                    found.append(load_config(candidate))
                except ConfigError:
                    continue   # that config's own problems are reported when it is validated
    return found


class Escalator:
    """The escalation timers: who an incident was announced to, and who is told next, when.

    Args:
        incidents: the incident tables.
        policies: escalation policies, first match wins.
        targets: every notifier target; incidents no policy matches are announced to all at once.
    """

    def __init__(self, incidents: IncidentStore, policies: Sequence[EscalationPolicy], targets: Sequence[str]):
        self.incidents = incidents
        self.policies = list(policies)
        self.targets = tuple(targets)
        self.links = Links()     # console URLs in the payloads (IncidentEngine sets api.public_url's)

    def start(self, tx: IncidentRecords, incident: dict[str, Any], event_id: int, event: str,
              now: dt.datetime) -> tuple[str, ...]:
        """Notify the first tier of the matching policy (every target if none) about ``event`` and
        store the timer for the next tier. Returns the targets notified."""
        policy = policy_for(self.policies, labels(incident))
        before = tx.escalation(incident["id"])
        notified = tuple(before.notified) if before is not None else ()
        if policy is None:
            targets, status, next_at, name = self.targets, "done", None, None
        else:
            targets = policy.tiers[0].targets
            step = policy.next_step(0, 0)
            status = "active" if step else "done"
            next_at = now + dt.timedelta(seconds=policy.tiers[0].delay or 0) if step else None
            name = policy.name
        escalation = {"policy": name, "tier": 1, "loop": 0} if policy else None
        enqueue(tx.conn, incident_id=incident["id"], event_id=event_id, targets=targets,
                payload=build_payload(event, incident, now, actor=None, escalation=escalation, links=self.links),
                now=now)
        tx.save_escalation(incident["id"], policy=name, tier=0, loop=0, status=status, next_at=next_at,
                           notified=tuple(dict.fromkeys((*notified, *targets))), now=now)
        return tuple(targets)

    def hold(self, tx: IncidentRecords, incident_id: int, now: dt.datetime) -> None:
        """An incident that opens silenced: a stopped timer, nobody notified."""
        tx.save_escalation(incident_id, policy=None, tier=0, loop=0, status="stopped", next_at=None, notified=(),
                           now=now)

    def stop(self, tx: IncidentRecords, incident_id: int, now: dt.datetime) -> tuple[str, ...]:
        """Stop the timer (a person took over, or it was silenced); returns everyone notified so far."""
        esc = tx.escalation(incident_id)
        if esc is None:
            # incidents from before escalation was stored have no row: they were announced to everyone
            return self.targets
        tx.end_escalation(incident_id, "stopped", now)
        return tuple(esc.notified)

    @staticmethod
    def status(tx: IncidentRecords, incident_id: int) -> dict[str, Any] | None:
        """The timer as ``get`` shows it (1-based tier)."""
        esc = tx.escalation(incident_id)
        return None if esc is None else {
            "policy": esc.policy, "tier": esc.tier + 1, "loop": esc.loop, "status": esc.status,
            "next_at": as_utc(esc.next_at), "notified": list(esc.notified)}

    def tick(self, now: dt.datetime) -> int:
        """Escalate every incident whose tier delay has passed; returns the steps taken."""
        with self.incidents.read() as tx:
            due = tx.due_escalations(now)
        policies = {p.name: p for p in self.policies}
        steps = 0
        for incident_id in due:
            while self._step(incident_id, policies, now):
                steps += 1
        return steps

    def _step(self, incident_id: int, policies: Mapping[str, EscalationPolicy], now: dt.datetime) -> bool:
        # One transaction per step, the timer row claimed (a replica holding it is skipped) and the
        # update fenced on the stored timer: two daemons never take one step twice.
        with self.incidents.begin() as tx:
            esc = tx.escalation(incident_id, claim=True)
            if esc is None or esc.status != "active" or esc.next_at is None or as_utc(esc.next_at) > now:
                return False
            policy = policies.get(esc.policy or "")
            step = policy.next_step(esc.tier, esc.loop) if policy and esc.tier < len(policy.tiers) else None
            incident = tx.incident(incident_id)
            if step is None or incident is None or incident["state"] != "open":
                # the policy changed or was removed since the timer was set, or the state moved on
                tx.end_escalation(incident_id, "done", now)
                return False
            tier, loop = step
            due_at = as_utc(esc.next_at)
            # the next timer counts from when this step was due, not from when it ran, so a late
            # tick (a restart) does not push every later tier back as well
            nxt = policy.next_step(tier, loop)
            next_at = due_at + dt.timedelta(seconds=policy.tiers[tier].delay or 0) if nxt else None
            targets = policy.tiers[tier].targets
            if not tx.advance_escalation(esc, tier=tier, loop=loop, status="active" if nxt else "done",
                                         next_at=next_at, notified=dict.fromkeys((*esc.notified, *targets)), now=now):
                return False                      # another process took this step
            detail = {"policy": policy.name, "tier": tier + 1, "loop": loop, "targets": list(targets),
                      "due_at": iso(due_at)}
            event_id = tx.add_event(incident_id, at=now, actor=SYSTEM_ACTOR, action="escalated", from_state="open",
                                    to_state="open", run_id=None, detail=detail)
            enqueue(tx.conn, incident_id=incident_id, event_id=event_id, targets=targets, now=now,
                    payload=build_payload("escalated", incident, now, actor=None,
                                          escalation={"policy": policy.name, "tier": tier + 1, "loop": loop},
                                          links=self.links))
            return True
