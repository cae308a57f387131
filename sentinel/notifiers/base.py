"""The notifier protocol: how an incident event leaves Sentinel.

Notifiers are never called by the incident engine directly. The engine writes one ``outbox`` row
per target in the same transaction as the incident transition; the ``OutboxDispatcher``
(``outbox.py``) later hands each row's payload to the target's notifier and records the outcome,
retrying with backoff. A notifier therefore only has to do one thing: try to deliver one payload,
once, and say how it failed.

Built-in notifiers are chosen by a short name in config (``type: webhook``); a user's own class is
named by import string (``type: "acme.notify:TeamsNotifier"``), see ``build_notifier``.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

from ..errors import ConfigError, SentinelError
from ..registry import PluginError, resolve
from ..suggest import did_you_mean

# Short names of the built-in notifiers; anything else of the form "module:Class" is imported.
NOTIFIERS: dict[str, str] = {
    "webhook": "sentinel.notifiers.webhook:WebhookNotifier",
    "slack": "sentinel.notifiers.slack:SlackNotifier",
    "pagerduty": "sentinel.notifiers.pagerduty:PagerDutyNotifier",
    "alertmanager": "sentinel.notifiers.alertmanager:AlertmanagerNotifier",
    "email": "sentinel.notifiers.smtp:SmtpNotifier",
    "kafka_guard": "sentinel.notifiers.kafka_guard:KafkaGuardNotifier",
}


class DeliveryError(SentinelError):
    """One delivery attempt failed.

    ``retryable`` says whether trying the same payload again later may succeed (a timeout, a
    refused connection, HTTP 408/429/5xx) or never will (HTTP 400, 401, 404...: the request or the
    configuration is wrong). The dispatcher retries the first kind with backoff and marks the second
    ``failed`` at once. ``status`` is the HTTP status when there was one; ``retry_after`` is a delay
    in seconds the receiver asked for (``Retry-After``), which the dispatcher honours up to its
    maximum backoff.

    The message must never contain secrets or URL query strings (they often carry tokens): it is
    stored in ``outbox.last_error`` and shown by the API and CLI.
    """

    def __init__(self, target: str, problem: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None):
        self.target, self.problem = target, problem
        self.retryable, self.status, self.retry_after = retryable, status, retry_after
        super().__init__(f"{target}: {problem}")


@runtime_checkable
class Notifier(Protocol):
    """Delivers incident event payloads to one target (a webhook, a Slack channel, PagerDuty...).

    Attributes:
        name: the target's name as configured (the key under ``notifiers:``); it is the ``target``
            of outbox rows and the ``target`` label of ``sentinel_notifications_total``.

    Implementations are built by ``build_notifier`` from a ``NotifierConfig``: a class with a
    ``from_config(name, cfg)`` classmethod is built with it, any other class as ``Cls(name, cfg)``.
    They must be safe to call from several threads (two dispatchers may share one), and must not
    keep per-payload state: every call is independent.
    """

    name: str

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        """Deliver ``payload`` once; return normally only when the receiver accepted it.

        Args:
            payload: the JSON-ready event (format version 1: ``version``, ``event``, ``at``,
                ``incident``, ``actor``); render it as the target needs, but do not drop fields a
                receiver may rely on.
            idempotency_key: ``"{incident_id}:{event_id}:{target}"``, unique per outbox row and the
                same on every retry of that row. Pass it to the receiver (a header, a dedup key)
                so it can drop repeats: Sentinel sends each row until one attempt succeeds, and a
                crash between a successful send and recording it means one more send after restart.

        Raises:
            DeliveryError: the attempt failed; ``retryable`` decides whether it is tried again.
                Any other exception is treated by the dispatcher as a retryable failure (and
                logged as a bug in the notifier).

        Must not block for longer than the notifier's configured timeout.
        """
        ...


def build_notifier(name: str, cfg: Any) -> Notifier:
    """Build the notifier for target ``name`` from its ``NotifierConfig`` (``cfg.type`` is a
    built-in short name from ``NOTIFIERS`` or a ``"module:Class"`` import string).

    Raises ``PluginError`` for an unknown type and ``ConfigError`` for an unusable configuration
    (e.g. a webhook without a URL), so a bad target fails at start, not at the first incident.
    """
    cls = resolve("notifier", cfg.type, NOTIFIERS)
    factory = getattr(cls, "from_config", None)
    notifier = factory(name, cfg) if callable(factory) else cls(name, cfg)
    return notifier


def build_notifiers(cfg: Any) -> dict[str, Notifier]:
    """Every notifier a ``Config`` names, keyed by target name. Errors name the config file and
    the key (``sentinel.yaml: notifiers.oncall.url: ...``)."""
    out = {}
    for name, ncfg in cfg.notifiers.items():
        try:
            out[name] = build_notifier(name, ncfg)
        except ConfigError as exc:
            key = exc.key if exc.source != "notifiers" else f"notifiers.{exc.key}"
            raise ConfigError(cfg.source, key, exc.problem) from None
        except PluginError as exc:
            raise ConfigError(cfg.source, f"notifiers.{name}.type", str(exc)) from None
    return out


def check_notifier_types(cfg: Any) -> None:
    """Every configured notifier ``type`` names a notifier class (ConfigError naming the key)."""
    for name, ncfg in cfg.notifiers.items():
        try:
            resolve("notifier", ncfg.type, NOTIFIERS)
        except PluginError as exc:
            raise ConfigError(cfg.source, f"notifiers.{name}.type", str(exc)) from None


def notifier_params(name: str, params: Mapping[str, Any], defaults: Mapping[str, Any],
                    required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A plug-in's ``params`` with ``defaults`` filled in; unknown keys and missing ``required``
    ones are ConfigErrors naming ``<name>.params.<key>`` (a typo must not be silently ignored)."""
    for key in params:
        if key not in defaults:
            hint = did_you_mean(key, sorted(defaults), cutoff=0.5, listing="valid keys")
            raise ConfigError("notifiers", f"{name}.params.{key}", f"unknown key{hint}")
    out = {**defaults, **params}
    for key in required:
        if out.get(key) in (None, "", []):
            raise ConfigError("notifiers", f"{name}.params.{key}", "required key is missing")
    return out
