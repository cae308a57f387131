"""A generic JSON webhook: POST the event payload to a URL, signed with HMAC-SHA256."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any, Callable, Mapping

from ..config import NotifierConfig, read_secret
from ..errors import ConfigError
from ..redact import SECRETS, redact_url
from .http import HttpPoster, url_from_config

__all__ = ["WebhookNotifier", "redact_url"]

log = logging.getLogger(__name__)

# Headers Sentinel sets itself; configured extra headers may not override them (a stray
# "Content-Type" or "Idempotency-Key" in the config would break signature checks or dedup).
_RESERVED = {"content-type", "idempotency-key", "x-sentinel-timestamp", "x-sentinel-signature", "content-length"}


class WebhookNotifier:
    """POSTs each event as JSON to one URL.

    Request:
        ``POST <url>`` with the payload as compact JSON with sorted keys (ASCII, UTF-8) and headers
        ``Content-Type: application/json``, ``Idempotency-Key: <incident_id>:<event_id>:<target>``
        (the same on every retry of an event: drop repeats by it), ``X-Sentinel-Timestamp: <unix
        seconds>``, any configured extra headers, and, when a secret is configured,
        ``X-Sentinel-Signature: sha256=<hex>``.

    Verifying the signature (receiver side)::

        expected = hmac.new(secret, f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(header_value, "sha256=" + expected)

    where ``timestamp`` is the ``X-Sentinel-Timestamp`` header exactly as received and ``raw_body``
    the request body bytes exactly as received (do not re-serialise the JSON). Reject requests whose
    timestamp is more than a few minutes from your clock to stop replays; retries are re-signed with
    a fresh timestamp, so a legitimate late retry still verifies.

    Outcome: any 2xx is delivered. 408, 429, 5xx, connection errors and timeouts are retryable
    (``Retry-After`` is passed on); other statuses, including redirects (not followed), are
    permanent. Neither the secret nor the URL beyond ``scheme://host[:port]`` (its path and query
    often are the token) is ever logged or put into an error message.
    """

    def __init__(self, name: str, url: str, *, secret: str | None = None, timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time):
        self._http = HttpPoster(name, url, timeout=timeout)
        bad = sorted(h for h in (headers or {}) if h.lower() in _RESERVED)
        if bad:
            raise ConfigError("notifiers", f"{name}.headers", f"{', '.join(bad)} is set by Sentinel and cannot be overridden")
        self.name = name
        self._safe_url = self._http.safe_url
        SECRETS.add(secret)
        self._secret = secret.encode() if secret else None
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._clock = clock

    @classmethod
    def from_config(cls, name: str, cfg: NotifierConfig, *, environ: Mapping[str, str] | None = None) -> "WebhookNotifier":
        """Build from config: the URL from ``url`` or the env var named by ``url_env`` (for URLs
        that embed a token), the HMAC secret from the env var named by ``secret_env``."""
        url = url_from_config(name, cfg, environ=environ)
        secret = None
        if cfg.secret_env:
            secret = read_secret(cfg.secret_env, environ=environ)
            if not secret:
                # A configured but empty secret would silently send unsigned requests that a
                # verifying receiver rejects forever; fail at start instead.
                raise ConfigError("notifiers", f"{name}.secret_env", f"env var {cfg.secret_env!r} is not set or empty")
        return cls(name, url, secret=secret, timeout=cfg.timeout_seconds, headers=cfg.headers)

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, url={self._safe_url!r}, signed={self._secret is not None})"

    # -- delivery ------------------------------------------------------------------------------
    def body(self, payload: Mapping[str, Any]) -> bytes:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def sign(self, timestamp: str, body: bytes) -> str | None:
        if self._secret is None:
            return None
        return "sha256=" + hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        body = self.body(payload)
        timestamp = str(int(self._clock()))
        headers = {**self.headers, "Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                   "X-Sentinel-Timestamp": timestamp}
        signature = self.sign(timestamp, body)
        if signature:
            headers["X-Sentinel-Signature"] = signature
        self._http.post(body, headers)
        log.debug("webhook %s delivered %s", self.name, idempotency_key)
