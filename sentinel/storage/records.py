"""What the storage classes share, at the bottom of the storage package: time in UTC, row → dict
in UTC (every read that hands out rows as dicts goes through :func:`utc_dict`), and the records
pattern (SQL on one connection, handed out inside a transaction or a read)."""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterator, TypeVar

from sqlalchemy import Connection

R = TypeVar("R")


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands datetimes back naive; everything Sentinel stores is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def utc_dict(row: Any) -> dict[str, Any]:
    """``row`` as a plain dict, every datetime in it as an aware UTC datetime."""
    d = dict(row._mapping)
    for k, v in d.items():
        if isinstance(v, dt.datetime):
            d[k] = as_utc(v)
    return d


class RecordsStore(Generic[R]):
    """Hands out ``records(conn)`` objects of one store: ``begin()`` in a transaction (everything
    done through them commits together or not at all), ``read()`` on a plain connection."""
    records: Callable[[Connection], R]

    def __init__(self, store: Any):
        # a sentinel.storage.repository.Store (not imported: that module builds on this one); its
        # engine is looked up per call, since a store may be swapped in tests
        self._store = store

    @contextmanager
    def begin(self) -> Iterator[R]:
        with self._store.engine.begin() as conn:
            yield self.records(conn)

    @contextmanager
    def read(self) -> Iterator[R]:
        with self._store.engine.connect() as conn:
            yield self.records(conn)
