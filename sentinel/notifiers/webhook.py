"""A generic JSON webhook: POST the event payload to a URL, signed with HMAC-SHA256.

Standard library only (``urllib.request``): one POST per attempt needs no HTTP client dependency.
"""
from __future__ import annotations

import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping

from ..config import NotifierConfig, read_secret
from ..errors import ConfigError
from .base import DeliveryError

log = logging.getLogger(__name__)

# Headers Sentinel sets itself; configured extra headers may not override them (a stray
# "Content-Type" or "Idempotency-Key" in the config would break signature checks or dedup).
_RESERVED = {"content-type", "idempotency-key", "x-sentinel-timestamp", "x-sentinel-signature", "content-length"}
_MAX_ERROR_BODY = 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a body-less GET; a webhook "delivered" that way was not
    # delivered. Refuse redirects so the 3xx surfaces as a permanent error naming the status.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401, ANN001
        return None


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
    permanent. Neither the secret nor the URL's query string (often a token) is ever logged or put
    into an error message.
    """

    def __init__(self, name: str, url: str, *, secret: str | None = None, timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            # urllib would also open file:// and ftp:// URLs; a webhook is HTTP(S) only.
            raise ConfigError("notifiers", f"{name}.url", f"must be an http(s) URL, got {redact_url(url)!r}")
        bad = sorted(h for h in (headers or {}) if h.lower() in _RESERVED)
        if bad:
            raise ConfigError("notifiers", f"{name}.headers", f"{', '.join(bad)} is set by Sentinel and cannot be overridden")
        self.name = name
        self._url = url
        self._safe_url = redact_url(url)
        self._secret = secret.encode() if secret else None
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def from_config(cls, name: str, cfg: NotifierConfig, *, environ: Mapping[str, str] | None = None) -> "WebhookNotifier":
        """Build from config: the URL from ``url`` or the env var named by ``url_env`` (for URLs
        that embed a token), the HMAC secret from the env var named by ``secret_env``."""
        url = cfg.url or read_secret(cfg.url_env, environ=environ)
        if not url:
            where = f"neither url nor the env var {cfg.url_env!r} (url_env) is set" if cfg.url_env else "url (or url_env) is required"
            raise ConfigError("notifiers", f"{name}.url", where)
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
        req = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read(64 * 1024)  # drain a little so keep-alive peers are not cut mid-response
                status = resp.status
        except urllib.error.HTTPError as exc:
            self._raise_for_status(exc)
        except (OSError, http.client.HTTPException) as exc:
            # URLError (refused, DNS), socket timeouts and dropped connections are OSErrors; a
            # garbled response is an HTTPException. All may go away on a later attempt.
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(self.name, f"POST {self._safe_url} failed: {_describe(reason)}", retryable=True) from None
        if not 200 <= status < 300:  # 1xx never reaches here; 3xx are raised as HTTPError
            raise DeliveryError(self.name, f"POST {self._safe_url} answered HTTP {status}", retryable=False, status=status)
        log.debug("webhook %s delivered %s", self.name, idempotency_key)

    def _raise_for_status(self, exc: urllib.error.HTTPError) -> None:
        status = exc.code
        try:
            snippet = exc.read(_MAX_ERROR_BODY).decode("utf-8", "replace").strip()
        except Exception:  # the body is only a hint for the operator
            snippet = ""
        finally:
            exc.close()
        retryable = status in (408, 429) or status >= 500
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        detail = f"POST {self._safe_url} answered HTTP {status}"
        if 300 <= status < 400:
            detail += " (redirects are not followed; configure the final URL)"
        if snippet:
            detail += f": {' '.join(snippet.split())}"
        raise DeliveryError(self.name, detail, retryable=retryable, status=status, retry_after=retry_after) from None


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials, query string or fragment."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
        return urllib.parse.urlunsplit((p.scheme, host, p.path, "", ""))
    except ValueError:
        return "<invalid url>"


def _describe(reason: object) -> str:
    # Only the error's kind and the OS's own wording: str() of some exceptions (InvalidURL, a
    # proxy error) repeats the URL, query string included.
    if isinstance(reason, TimeoutError) or (isinstance(reason, str) and "timed out" in reason):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{reason.strerror} ({type(reason).__name__})"
    if isinstance(reason, str):
        return reason if "://" not in reason else "connection error"
    return type(reason).__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
