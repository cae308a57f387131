"""PagerDuty Events API v2: trigger, acknowledge and resolve one PagerDuty alert per incident.

Config::

    notifiers:
      pagerduty:
        type: pagerduty
        params: {routing_key_env: PD_ROUTING_KEY, sentinel_url: "https://sentinel.internal:8080"}
        # url: defaults to https://events.pagerduty.com/v2/enqueue (set it to reach a proxy or a test receiver)

Every event of one incident carries the same ``dedup_key`` (``sentinel-<incident id>-<fingerprint>``),
so PagerDuty folds opened/escalated into one alert, and acknowledge/resolve act on it. Severity maps
critical → critical, high → error, warning → warning. PagerDuty answers 202; 429 and 5xx are
retried, 400 (an invalid event or routing key) is not.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..config import read_secret
from ..errors import ConfigError
from ..redact import SECRETS
from .base import notifier_params
from .http import HttpPoster, url_from_config
from .render import evidence_lines, links, summary, what_happened

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_SEVERITY = {"critical": "critical", "high": "error", "warning": "warning"}
_ACTION = {"acknowledged": "acknowledge", "resolved": "resolve"}     # everything else triggers


def dedup_key(incident: Mapping[str, Any]) -> str:
    return f"sentinel-{incident['id']}-{incident['fingerprint']}"


class PagerDutyNotifier:
    def __init__(self, name: str, routing_key: str, *, url: str = EVENTS_URL, timeout: float = 5.0,
                 sentinel_url: str | None = None, source: str = "sentinel"):
        self.name = name
        self._http = HttpPoster(name, url, timeout=timeout)
        SECRETS.add(routing_key)   # in every request body: a receiver's error may quote it
        self._routing_key = routing_key
        self.sentinel_url, self.source = sentinel_url, source

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> "PagerDutyNotifier":
        p = notifier_params(name, cfg.params, {"routing_key_env": None, "routing_key_file": None,
                                               "sentinel_url": None, "source": "sentinel"})
        key = read_secret(p["routing_key_env"], p["routing_key_file"])
        if not key:
            raise ConfigError("notifiers", f"{name}.params.routing_key_env",
                              "the integration (routing) key is required: name an env var holding it "
                              f"(routing_key_env{', currently ' + repr(p['routing_key_env']) + ' is empty' if p['routing_key_env'] else ''}) or a file (routing_key_file)")
        return cls(name, key, url=url_from_config(name, cfg, default=EVENTS_URL), timeout=cfg.timeout_seconds,
                   sentinel_url=p["sentinel_url"], source=p["source"])

    def __repr__(self) -> str:
        return f"PagerDutyNotifier(name={self.name!r}, url={self._http.safe_url!r})"

    def event(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The Events API v2 body for ``payload``."""
        inc = payload["incident"]
        action = _ACTION.get(payload.get("event", ""), "trigger")
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": action,
                                "dedup_key": dedup_key(inc)}
        if action == "trigger":
            body["payload"] = {
                "summary": summary(payload),
                "source": self.source, "severity": _SEVERITY.get(inc["severity"], "error"),
                "timestamp": payload.get("at"), "component": inc["pair"], "group": inc["check"],
                "class": "model_regression",
                "custom_details": {"event": what_happened(payload), "incident_id": inc["id"], "state": inc["state"],
                                   "slices": inc.get("slices"), "evidence": evidence_lines(payload),
                                   "occurrences": inc["occurrences"], "run_ids": inc.get("run_ids"),
                                   "report": inc.get("report")},
            }
            body["links"] = [{"href": href, "text": text} for text, href in links(payload, self.sentinel_url)]
            body["client"] = "Sentinel"
            if self.sentinel_url:
                body["client_url"] = f"{self.sentinel_url.rstrip('/')}/incidents/{inc['id']}"
        return body

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        self._http.post(json.dumps(self.event(payload)).encode(), {"Content-Type": "application/json"})
