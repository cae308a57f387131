"""One HTTP POST per delivery attempt, shared by the HTTP notifiers (webhook, Slack, PagerDuty,
Alertmanager). Standard library only (``urllib.request``): one POST needs no client dependency.

Outcome classification (``DeliveryError.retryable``): 2xx is delivered; 408, 429, 5xx, refused
connections, timeouts and dropped connections may succeed later; every other status, redirects
included (not followed), will not. The URL is a secret as a whole (Slack's secret is its path):
errors show ``scheme://host[:port]`` only, and a receiver's reply quoted in an error is scrubbed of
the URL's parts (a proxy's "Cannot POST /services/..." page would otherwise repeat it).
"""
from __future__ import annotations

import email.utils
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

from ..config import read_secret
from ..errors import ConfigError
from ..redact import SECRETS, redact_url
from .base import DeliveryError

_MAX_ERROR_BODY = 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a body-less GET; a webhook "delivered" that way was not
    # delivered. Refuse redirects so the 3xx surfaces as a permanent error naming the status.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401, ANN001
        return None


class HttpPoster:
    """POSTs bodies to one http(s) URL for the notifier ``name``; checks the URL at construction
    (a ConfigError naming ``notifiers.<name>.<field>``)."""

    def __init__(self, name: str, url: str, *, timeout: float = 5.0, field: str = "url"):
        SECRETS.add_url(url)
        try:
            parsed = urllib.parse.urlsplit(url)
        except ValueError:
            raise ConfigError("notifiers", f"{name}.{field}", "not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            # urllib would also open file:// and ftp:// URLs; notifiers speak HTTP(S) only.
            raise ConfigError("notifiers", f"{name}.{field}", f"must be an http(s) URL, got {redact_url(url)!r}")
        self.name, self.url, self.safe_url, self.timeout = name, url, redact_url(url), timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def post(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        """POST once; returns the response body (first 64 KiB) or raises DeliveryError."""
        req = urllib.request.Request(self.url, data=body, headers=dict(headers), method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                reply = resp.read(64 * 1024)  # drain a little so keep-alive peers are not cut mid-response
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise self._status_error(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            # URLError (refused, DNS), socket timeouts and dropped connections are OSErrors; a
            # garbled response is an HTTPException. All may go away on a later attempt.
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(self.name, f"POST {self.safe_url} failed: {_describe(reason)}", retryable=True) from None
        if not 200 <= status < 300:  # 1xx never reaches here; 3xx are raised as HTTPError
            raise DeliveryError(self.name, f"POST {self.safe_url} answered HTTP {status}", retryable=False, status=status)
        return reply

    def _status_error(self, exc: urllib.error.HTTPError) -> DeliveryError:
        status = exc.code
        try:
            snippet = SECRETS.scrub(exc.read(_MAX_ERROR_BODY).decode("utf-8", "replace").strip())
        except Exception:  # the body is only a hint for the operator
            snippet = ""
        finally:
            exc.close()
        retryable = status in (408, 429) or status >= 500
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        detail = f"POST {self.safe_url} answered HTTP {status}"
        if 300 <= status < 400:
            detail += " (redirects are not followed; configure the final URL)"
        if snippet:
            detail += f": {' '.join(snippet.split())}"
        return DeliveryError(self.name, detail, retryable=retryable, status=status, retry_after=retry_after)


def url_from_config(name: str, cfg: Any, *, environ: Mapping[str, str] | None = None, default: str | None = None) -> str:
    """The target URL from ``url`` or the env var named by ``url_env`` (for URLs that embed a
    token, like Slack's), else ``default``; a ConfigError if there is none."""
    url = cfg.url or read_secret(cfg.url_env, environ=environ) or default
    if not url:
        where = f"neither url nor the env var {cfg.url_env!r} (url_env) is set" if cfg.url_env else "url (or url_env) is required"
        raise ConfigError("notifiers", f"{name}.url", where)
    return url


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
