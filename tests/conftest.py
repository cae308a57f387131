"""Shared fixtures. Kafka: one real Tansu broker per test session (no mocks), a fresh topic per
test."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from sentinel.testing.broker import TansuBroker, broker_available, unique_name


@pytest.fixture(scope="session")
def broker():
    """A started local Tansu broker shared by the whole session (it starts in well under a
    second, but each test creating its own would also re-pay client bootstraps)."""
    reason = broker_available()
    if reason:
        pytest.skip(f"Kafka tests need the tansu broker: {reason}")
    b = TansuBroker()
    b.start()
    yield b
    b.stop()
    if os.environ.get("SENTINEL_KEEP_BROKER_LOG") != "1":
        b.log_path.unlink(missing_ok=True)


@pytest.fixture
def topic(broker: TansuBroker) -> str:
    """A fresh single-partition topic, created on the session broker (unique: the broker is
    shared by the whole session). Kafka consumers in tests should use
    ``sentinel.testing.broker.FAST_GROUP`` timings so a group join takes ~3 s, not ~23 s."""
    name = unique_name("topic")
    broker.create_topic(name, partitions=1)
    return name


# -- fixtures shared by the incident, outbox and notifier tests --------------------------------

from stores import store_url  # noqa: E402,F401  (fixture: one fresh database per test, per backend)


class Clock:
    """The injected clock of the incident engine and the outbox dispatcher: time moves only when a
    test says so (``advance``), so no test sleeps through a real minute."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 10, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url):  # noqa: F811
    """A fresh, migrated store on each backend (SQLite, and PostgreSQL where it is reachable)."""
    from sentinel.storage.repository import open_store

    s = open_store(store_url)
    yield s
    s.dispose()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib honours http_proxy; loopback requests in tests must never go through one."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serve():
    """Start loopback receivers (``tests/receivers.py``) with a handler; all stop at teardown."""
    from receivers import Receiver

    started = []

    def start(handler=None):
        started.append(Receiver(handler))
        return started[-1]

    yield start
    for rx in started:
        rx.stop()


@pytest.fixture
def receiver(serve):
    """One loopback receiver answering 200 (``script`` sets the next statuses); its URL carries a
    token in the query, which must never show in an error or a stored ``last_error``."""
    rx = serve()
    rx.path = "/hook?token=abc123"
    return rx
