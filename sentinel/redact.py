"""Secrets never leave: one way to show a URL, and one registry of secret values to scrub.

Notifier URLs are secrets as a whole (Slack's secret *is* the path; webhooks carry tokens in the
path or query; Alertmanager proxies take credentials in the user info), so a URL is only ever
shown as ``scheme://host[:port]`` (``redact_url``): in errors, outbox ``last_error``, API
responses, logs, reports and CLI output.

Belt and braces: ``SECRETS`` holds every secret value Sentinel knows (the API token, notifier
URLs and their parts, HMAC secrets, routing keys, the SMTP and SASL passwords, the store URL's
password), registered where each is read (``sentinel.config.register_secrets`` at start, and the notifiers
themselves), and
``scrub`` replaces any of them in a text. ``sentinel.logs.SecretFilter`` scrubs every log record
with it, so even a library that logs its configuration cannot print one.
"""
from __future__ import annotations

import threading
import urllib.parse
from typing import Any, Iterable

#: Shorter values are not registered: scrubbing "abc" out of every log line would mangle words
#: and protect nothing (a secret that short is guessable anyway).
MIN_SECRET_LENGTH = 6
#: Path segments at least this long look like tokens (Slack's are 24 characters) and are
#: registered on their own, in case something prints one segment.
TOKEN_SEGMENT_LENGTH = 16
MASK = "[redacted]"


def redact_url(url: Any) -> str:
    """``scheme://host[:port]`` only: no credentials, path, query string or fragment."""
    try:
        p = urllib.parse.urlsplit(str(url))
        host = p.hostname or ""
        if ":" in host:          # IPv6 literal
            host = f"[{host}]"
        if p.port:
            host = f"{host}:{p.port}"
    except ValueError:
        return "<invalid url>"
    if not p.scheme:
        return "<url>"
    return f"{p.scheme}://{host}"


def url_secrets(url: str | None) -> list[str]:
    """The parts of ``url`` that may carry a secret: the whole URL, its path and query (and
    both together), its password, and token-like path segments."""
    if not url:
        return []
    out = [url]
    try:
        p = urllib.parse.urlsplit(url)
        password = p.password
    except ValueError:
        return out
    tail = p.path + (f"?{p.query}" if p.query else "")
    out += [tail, p.path, p.query, p.fragment, password or ""]
    out += [seg for seg in p.path.split("/") if len(seg) >= TOKEN_SEGMENT_LENGTH]
    out += [v for _k, v in urllib.parse.parse_qsl(p.query) if v]
    return out


class SecretRegistry:
    """A thread-safe set of secret values; ``scrub(text)`` masks every one of them."""

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH}
        if not fresh - set(self._values):
            return
        with self._lock:
            # longest first, so a URL is masked whole before its path would be
            self._values = tuple(sorted(set(self._values) | fresh, key=len, reverse=True))

    def add_url(self, url: str | None) -> None:
        self.add(*url_secrets(url))

    def clear(self) -> None:
        with self._lock:
            self._values = ()

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def scrub(self, text: str) -> str:
        values = self._values
        if not values or not text:
            return text
        for v in values:
            if v in text:
                text = text.replace(v, MASK)
        return text


#: The process's registry (the log filter reads it; notifiers and ``register_config`` fill it).
SECRETS = SecretRegistry()


def scrub(text: str) -> str:
    return SECRETS.scrub(text)


def register(values: Iterable[str | None]) -> None:
    SECRETS.add(*values)
