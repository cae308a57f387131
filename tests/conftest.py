"""Shared fixtures. Kafka: one real Tansu broker per test session (no mocks), a fresh topic per
test."""
from __future__ import annotations

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
