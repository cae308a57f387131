"""Guard action: a control message on a Kafka topic for the serving layer to act on
(``type: kafka_guard``), e.g. stop sending traffic to a compressed model that fails its checks.

Config (a target like any other: put it in an escalation tier to act at once or only later)::

    notifiers:
      triage-guard:
        type: kafka_guard
        params:
          bootstrap_servers: ["kafka:9092"]
          topic: model-control
          action: route_to_baseline          # or route_to_human_review, rollback

The message (JSON value, key = the pair name, header ``idempotency-key``)::

    {"action": "route_to_baseline", "active": true, "pair": "triage", "incident_id": 12,
     "severity": "critical", "event": "opened", "reason": "...", "at": "...", "key": "12:40:triage-guard"}

``active`` is true while the incident needs attention (opened, reopened, escalated, unsilenced)
and false when it is resolved, so the serving layer knows when to undo the action; an
acknowledgement sends nothing (a person looking does not change what serving should do).
A serving layer should drop repeats by ``key`` (sent at least once).

Whether the incident stops the candidate at all is the rollout gate's verdict
(:func:`sentinel.gate.incident_verdict`, the same :func:`sentinel.gate.judge` that answers
``GET /api/v1/gate``): only a ``fail`` acts. An incident of warnings alone (``incidents.open_on:
[warn]``) sends nothing, since the gate would let that candidate through.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Sequence

from ..errors import ConfigError
from ..gate import incident_verdict
from .base import DeliveryError, notifier_params
from .render import summary

ACTIONS = ("route_to_baseline", "route_to_human_review", "rollback")


def _producer_factory() -> Any:
    """``make_producer(servers, timeout_s=...)`` from Sentinel's Kafka source when it exists
    (same client settings as ingest), else kafka-python's KafkaProducer directly."""
    try:
        from ..sources.kafka import make_producer  # type: ignore[import-not-found]
        return make_producer
    except ImportError:
        def make(servers: Sequence[str], *, timeout_s: float = 10.0) -> Any:
            from kafka import KafkaProducer

            return KafkaProducer(bootstrap_servers=list(servers), max_block_ms=int(timeout_s * 1000),
                                 request_timeout_ms=int(timeout_s * 1000), acks="all")
        return make


class KafkaGuardNotifier:
    def __init__(self, name: str, *, bootstrap_servers: Sequence[str], topic: str, action: str,
                 timeout: float = 10.0):
        if action not in ACTIONS:
            raise ConfigError("notifiers", f"{name}.params.action", f"unknown action {action!r}; actions are {', '.join(ACTIONS)}")
        self.name, self.servers, self.topic, self.action, self.timeout = name, list(bootstrap_servers), topic, action, timeout
        self._producer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> "KafkaGuardNotifier":
        p = notifier_params(name, cfg.params, {"bootstrap_servers": None, "topic": None, "action": None},
                            required=("bootstrap_servers", "topic", "action"))
        servers = p["bootstrap_servers"]
        servers = [s.strip() for s in servers.split(",")] if isinstance(servers, str) else list(servers)
        return cls(name, bootstrap_servers=servers, topic=p["topic"], action=p["action"], timeout=cfg.timeout_seconds)

    def __repr__(self) -> str:
        return f"KafkaGuardNotifier(name={self.name!r}, topic={self.topic!r}, action={self.action!r})"

    def control_message(self, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any] | None:
        event = payload.get("event")
        if event == "acknowledged" or incident_verdict(payload).verdict != "fail":
            return None
        inc = payload["incident"]
        return {"action": self.action, "active": event != "resolved", "pair": inc["pair"], "incident_id": inc["id"],
                "severity": inc["severity"], "event": event, "reason": summary(payload), "at": payload.get("at"),
                "key": idempotency_key}

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        msg = self.control_message(payload, idempotency_key)
        if msg is None:
            return
        try:
            with self._lock:   # one producer per target, created on first use (the broker may be down at start)
                if self._producer is None:
                    self._producer = _producer_factory()(self.servers, timeout_s=self.timeout)
                producer = self._producer
            future = producer.send(self.topic, key=msg["pair"].encode(), value=json.dumps(msg).encode(),
                                   headers=[("idempotency-key", idempotency_key.encode())])
            future.get(timeout=self.timeout)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and its source's own errors
            with self._lock:
                old, self._producer = self._producer, None     # rebuild on the next attempt
            if old is not None:
                try:
                    old.close(timeout=0)
                except Exception:  # closing a broken producer is best effort
                    pass
            raise DeliveryError(self.name, f"produce to {self.topic!r} on {','.join(self.servers)} failed: "
                                           f"{type(exc).__name__}: {str(exc)[:200]}", retryable=True) from None
