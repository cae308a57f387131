"""Prometheus Alertmanager API v2: each incident is one alert, so teams keep their existing
Alertmanager routing, grouping, inhibition and receivers.

Config::

    notifiers:
      alertmanager:
        type: alertmanager
        url: http://alertmanager:9093               # POSTs to <url>/api/v2/alerts
        params: {labels: {team: ml-platform}, hold: 7d, sentinel_url: "https://sentinel.internal:8080"}

The alert's labels (its identity in Alertmanager) are ``alertname`` (``SentinelIncident``),
``sentinel_incident`` (the id), ``pair``, ``check``, ``severity``, ``candidate`` (only in a pair
with several candidates, so Alertmanager's own silences and routes can match it) and the
configured static ``labels``; summary, description (the evidence), runbook URL, state and the event are annotations.
Alertmanager has no acknowledgement: an acknowledged incident's alert is re-sent with
``state=acknowledged`` and stays active. Resolution sets ``endsAt`` to the resolution time. An
active alert is sent with ``endsAt`` = event time + ``hold`` (default 7 days): Alertmanager
resolves alerts that are not re-sent before their ``endsAt``, and Sentinel sends on transitions
and escalations only (repeat loops in a policy re-send).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping

from ..errors import ConfigError
from ..durations import parse_duration
from .base import notifier_params
from .http import HttpPoster, url_from_config
from .render import evidence_lines, links, summary, what_happened


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _fmt(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class AlertmanagerNotifier:
    def __init__(self, name: str, url: str, *, timeout: float = 5.0, labels: Mapping[str, str] | None = None,
                 hold_seconds: float = 7 * 86400, sentinel_url: str | None = None,
                 alertname: str = "SentinelIncident"):
        self.name = name
        self._http = HttpPoster(name, url.rstrip("/") + "/api/v2/alerts", timeout=timeout)
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.hold = dt.timedelta(seconds=hold_seconds)
        self.sentinel_url, self.alertname = sentinel_url, alertname

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> "AlertmanagerNotifier":
        p = notifier_params(name, cfg.params, {"labels": {}, "hold": "7d", "sentinel_url": None,
                                               "alertname": "SentinelIncident"})
        try:
            hold = parse_duration(p["hold"])
        except ValueError as exc:
            raise ConfigError("notifiers", f"{name}.params.hold", str(exc)) from None
        if hold <= 0:
            raise ConfigError("notifiers", f"{name}.params.hold", f"must be positive, got {p['hold']!r}")
        if not isinstance(p["labels"], dict):
            raise ConfigError("notifiers", f"{name}.params.labels", "must be a mapping of label names to values")
        return cls(name, url_from_config(name, cfg), timeout=cfg.timeout_seconds, labels=p["labels"],
                   hold_seconds=hold, sentinel_url=p["sentinel_url"], alertname=p["alertname"])

    def __repr__(self) -> str:
        return f"AlertmanagerNotifier(name={self.name!r}, url={self._http.safe_url!r})"

    def alerts(self, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The ``POST /api/v2/alerts`` body for ``payload``: a list with the incident's one alert."""
        inc = payload["incident"]
        at = _parse_time(payload["at"])
        ends = at if payload.get("event") == "resolved" else at + self.hold
        labels = {**self.labels, "alertname": self.alertname, "sentinel_incident": str(inc["id"]),
                  "pair": inc["pair"], "check": inc["check"], "severity": inc["severity"]}
        if inc.get("candidate"):    # a pair with several candidates; single-candidate alerts keep their identity
            labels["candidate"] = inc["candidate"]
        annotations = {"summary": summary(payload), "description": "\n".join(evidence_lines(payload)),
                       "state": inc["state"], "event": what_happened(payload),
                       "slices": ", ".join(inc.get("slices") or [inc["slice"]])}
        if inc.get("runbook_url"):
            annotations["runbook_url"] = inc["runbook_url"]
        incident_links = links(payload, self.sentinel_url)
        report = next((href for text, href in incident_links if text.startswith("Run ")), None)
        if report:      # the run's console page, never a path on the daemon's disk
            annotations["report"] = report
        alert = {"labels": labels, "annotations": annotations, "startsAt": inc["opened_at"], "endsAt": _fmt(ends)}
        if incident_links and self.sentinel_url:
            alert["generatorURL"] = incident_links[0][1]
        return [alert]

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        self._http.post(json.dumps(self.alerts(payload)).encode(), {"Content-Type": "application/json"})
