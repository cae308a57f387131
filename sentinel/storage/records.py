"""What the storage classes share: row → dict in UTC, and the records pattern (SQL on one
connection, handed out inside a transaction or a read)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from sqlalchemy import Connection

from .repository import Store, as_utc

R = TypeVar("R")


def utc_dict(row: Any, datetime_keys: Iterable[str]) -> dict[str, Any]:
    """``row`` as a plain dict, its ``datetime_keys`` (those present) as aware UTC datetimes
    (SQLite hands datetimes back naive; everything Sentinel stores is UTC)."""
    d = dict(row._mapping)
    for k in datetime_keys:
        if k in d:
            d[k] = as_utc(d[k])
    return d


class RecordsStore(Generic[R]):
    """Hands out ``records(conn)`` objects of one store: ``begin()`` in a transaction (everything
    done through them commits together or not at all), ``read()`` on a plain connection."""
    records: Callable[[Connection], R]

    def __init__(self, store: Store):
        self._store = store       # the engine is looked up per call: a store may be swapped in tests

    @contextmanager
    def begin(self) -> Iterator[R]:
        with self._store.engine.begin() as conn:
            yield self.records(conn)

    @contextmanager
    def read(self) -> Iterator[R]:
        with self._store.engine.connect() as conn:
            yield self.records(conn)
