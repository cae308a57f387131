"""Email over SMTP (standard library ``smtplib``), one message per event (``type: email``).

Config::

    notifiers:
      ml-lead-email:
        type: email
        params:
          host: smtp.internal
          port: 587
          starttls: true                    # or ssl: true for port 465
          username: sentinel
          password_env: SMTP_PASSWORD
          from: sentinel@example.com
          to: [ml-lead@example.com]
          sentinel_url: https://sentinel.internal:8080

Subject ``[Sentinel][CRITICAL] opened: <title>``; a plain-text body with the evidence, links and
how to acknowledge. ``Message-ID`` is derived from the idempotency key (the same on every retry),
and every message of one incident carries ``References: <incident thread id>`` so mail clients
thread them. Temporary SMTP failures (4xx replies, connection errors, timeouts) are retried;
permanent ones (5xx, every recipient refused, authentication failure) are not.
"""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Sequence

from ..config import read_secret
from ..errors import ConfigError
from ..redact import SECRETS
from .base import DeliveryError, notifier_params
from .render import summary, text_body, what_happened


class SmtpNotifier:
    def __init__(self, name: str, *, host: str, port: int = 25, sender: str, to: Sequence[str],
                 timeout: float = 10.0, starttls: bool = False, use_ssl: bool = False, username: str | None = None,
                 password: str | None = None, sentinel_url: str | None = None):
        if not to:
            raise ConfigError("notifiers", f"{name}.params.to", "at least one recipient is required")
        bad = [a for a in [sender, *to] if "@" not in str(a)]
        if bad:
            raise ConfigError("notifiers", f"{name}.params", f"not an email address: {bad[0]!r}")
        self.name, self.host, self.port, self.sender, self.to = name, host, int(port), sender, list(to)
        self.timeout, self.starttls, self.use_ssl = timeout, starttls, use_ssl
        SECRETS.add(password)
        self.username, self._password, self.sentinel_url = username, password, sentinel_url

    @classmethod
    def from_config(cls, name: str, cfg: Any) -> "SmtpNotifier":
        p = notifier_params(name, cfg.params, {
            "host": None, "port": 25, "from": None, "to": [], "starttls": False, "ssl": False, "username": None,
            "password_env": None, "password_file": None, "sentinel_url": None}, required=("host", "from", "to"))
        to = [p["to"]] if isinstance(p["to"], str) else list(p["to"])
        password = read_secret(p["password_env"], p["password_file"])
        if p["username"] and not password:
            raise ConfigError("notifiers", f"{name}.params.password_env",
                              "username is set but no password: name an env var (password_env) or file (password_file)")
        return cls(name, host=p["host"], port=p["port"], sender=p["from"], to=to, timeout=cfg.timeout_seconds,
                   starttls=bool(p["starttls"]), use_ssl=bool(p["ssl"]), username=p["username"], password=password,
                   sentinel_url=p["sentinel_url"])

    def __repr__(self) -> str:
        return f"SmtpNotifier(name={self.name!r}, host={self.host!r}, port={self.port}, to={self.to!r})"

    def message(self, payload: dict[str, Any], idempotency_key: str) -> EmailMessage:
        inc = payload["incident"]
        msg = EmailMessage()
        msg["Subject"] = f"[Sentinel]{summary(payload, 200)} - {what_happened(payload)}"
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(usegmt=True)
        domain = self.sender.rpartition("@")[2]
        msg["Message-ID"] = f"<{idempotency_key.replace(':', '.')}@{domain}>"
        thread = f"<incident-{inc['id']}-{inc['fingerprint']}@{domain}>"
        msg["References"] = thread
        msg["In-Reply-To"] = thread
        msg["X-Sentinel-Idempotency-Key"] = idempotency_key
        msg.set_content(text_body(payload, self.sentinel_url))
        return msg

    def send(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        msg = self.message(payload, idempotency_key)
        where = f"SMTP {self.host}:{self.port}"
        try:
            cls = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
            with cls(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(self.name, f"{where} refused every recipient ({_codes(exc.recipients)})",
                                retryable=False) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(self.name, f"{where} rejected the login (SMTP {exc.smtp_code})", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx are temporary by definition (greylisting, a full queue); 5xx are not
            raise DeliveryError(self.name, f"{where} answered {exc.smtp_code}: {SECRETS.scrub(_text(exc.smtp_error))}",
                                retryable=400 <= exc.smtp_code < 500, status=exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(self.name, f"{where} failed: {type(exc).__name__}: {SECRETS.scrub(str(exc))}"[:300],
                                retryable=True) from None
        if refused:
            # accepted for some recipients: retrying would mail the others twice, so report, don't retry
            raise DeliveryError(self.name, f"{where} refused some recipients ({_codes(refused)})", retryable=False)


def _text(value: Any) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))[:200]


def _codes(recipients: dict[str, Any]) -> str:
    return ", ".join(f"{addr}: {code[0] if isinstance(code, tuple) else code}" for addr, code in recipients.items())
