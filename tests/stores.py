"""Store fixtures: every storage test runs on SQLite and on PostgreSQL. PostgreSQL is used where a
server is reachable at $SENTINEL_TEST_PG (default 127.0.0.1:5432, user postgres); if it is not,
the suite tries to start the local cluster once and otherwise skips those cases with the reason."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

PG_ADMIN = os.environ.get("SENTINEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
_pg_state: dict[str, str | None] = {}


def _pg_reason() -> str | None:
    """None when PostgreSQL is reachable, else why not (tries starting a local cluster once)."""
    if "reason" in _pg_state:
        return _pg_state["reason"]
    from sqlalchemy import create_engine, text

    def ping() -> str | None:
        try:
            eng = create_engine(PG_ADMIN, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
            return None
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"

    reason = ping()
    if reason is not None:
        try:
            versions = os.listdir("/etc/postgresql")
            if versions:
                subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"],
                               timeout=30, capture_output=True)
                reason = ping()
        except (OSError, subprocess.SubprocessError):
            pass
    _pg_state["reason"] = None if reason is None else f"PostgreSQL not reachable at {PG_ADMIN} ({reason})"
    if reason is not None:
        print(f"\nSKIPPING PostgreSQL cases: {_pg_state['reason']}")
    return _pg_state["reason"]


def _pg_database() -> str:
    from sqlalchemy import create_engine, text

    name = f"sentinel_test_{uuid.uuid4().hex[:10]}"
    eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _pg_drop(url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    eng = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/sentinel.db"
        return
    yield from _fresh_pg()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database URL only (tests of PostgreSQL behaviour); skipped, with the
    reason printed, when no server is reachable."""
    yield from _fresh_pg()


def _fresh_pg():
    reason = _pg_reason()
    if reason:
        pytest.skip(reason)
    url = _pg_database()
    try:
        yield url
    finally:
        _pg_drop(url)
