"""Structured logs: one JSON object per line (or plain text), with the ``extra=`` fields attached.

Every record goes through ``SecretFilter`` first: any known secret value (``sentinel.redact``) in
its message, arguments, extra fields or traceback is masked, whichever library logged it.
uvicorn's loggers propagate to the same handler, so its error lines and tracebacks are JSON too.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from .redact import SECRETS, SecretRegistry

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SCALARS = (int, float, bool, type(None))
#: uvicorn installs its own plain-text handlers unless told otherwise (the daemon passes
#: ``log_config=None``); these are made to propagate to Sentinel's handler instead.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _exc_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    # the cached text, which SecretFilter has already scrubbed
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class SecretFilter(logging.Filter):
    """Masks every value of ``secrets`` in a record (message and args, extra fields, exception
    and stack text) before any formatter sees it. Attached to handlers: a filter on the root
    logger would not see records propagated from other loggers."""

    def __init__(self, secrets: SecretRegistry = SECRETS) -> None:
        super().__init__()
        self.secrets = secrets
        self._fmt = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not len(self.secrets):
            return True
        scrub = self.secrets.scrub
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: show its parts rather than lose the record
            message = f"{record.msg} {record.args}"
        clean = scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        for key, value in _extras(record).items():
            if isinstance(value, _SCALARS):
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if scrub(text) != text:
                setattr(record, key, scrub(text))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._fmt.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        out.update(_extras(record))
        exc = _exc_text(self, record)
        if exc:
            out["exc"] = exc
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} {extras}".rstrip()
        exc = _exc_text(self, record)
        if exc:
            text += "\n" + exc
        return text


def setup_logging(level: str = "INFO", fmt: str = "json", stream=None) -> logging.Handler:
    """One handler on the root logger (JSON or text, secrets scrubbed); returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "apscheduler", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in UVICORN_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    return handler
