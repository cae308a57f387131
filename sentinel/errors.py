"""Sentinel's exceptions. Each carries its data and composes its own one-line message;
only the CLI turns an error into an exit code."""
from __future__ import annotations

import threading


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError, ValueError):
    """A configuration file (or an environment override) is wrong.

    ``source`` is the file or variable, ``key`` the dotted path inside it (may be empty).
    """

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)


class MessageError(SentinelError, ValueError):
    """A traffic or label message cannot be used; ``reason`` is a short machine-friendly code
    (it becomes the ``reason`` label of ``sentinel_messages_quarantined_total``)."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class NotFoundError(SentinelError, LookupError):
    def __init__(self, kind: str, ident: object):
        self.kind, self.ident = kind, ident
        super().__init__(f"no {kind} with id {ident!r}")


class StateError(SentinelError):
    """An operation is not allowed in the object's current state (e.g. ack a resolved incident)."""


class RunCancelled(SentinelError):
    """A revalidation stopped at a cancel point because the daemon is shutting down; ``stage``
    names the step it was about to start."""

    def __init__(self, stage: str):
        self.stage = stage
        super().__init__(f"revalidation cancelled before {stage}: the daemon is shutting down")


def check_cancel(cancel: threading.Event | None, stage: str) -> None:
    """A cooperative cancel point: raise RunCancelled when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise RunCancelled(stage)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an error, from the driver's own exception when SQLAlchemy wrapped
    one (SQLAlchemy's text would add the statement and its parameters, which may hold message data)."""
    orig = getattr(exc, "orig", None)
    base = orig if isinstance(orig, BaseException) else exc
    first = (str(base).strip().splitlines() or [""])[0]
    return (f"{type(base).__name__}: {first}" if first else type(base).__name__)[:limit]
