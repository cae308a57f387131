"""File source: a JSON-lines file of traffic messages, one message a line, read once from the start.

Used by ``sentinel revalidate --input FILE`` (a CI gate on recorded traffic) and by the daemon
with ``ingest: {source: file, file: traffic.jsonl}`` (a replay of recorded traffic, no broker).
Each non-blank line is one :class:`~sentinel.sources.base.RawRecord` of partition 0 whose offset
is its line number (1-based, so ``file:offset`` names the line); blank lines are skipped. The
bytes are read once at :meth:`FileSource.start`, and their sha256 (:attr:`FileSource.sha256`)
is what a run on the file records, so the run can later be checked against the file.

Progress is kept in memory only: a restarted daemon reads the file from the start again, and
the store drops the repeats by message ``id`` (at-least-once, as with Kafka).
"""
from __future__ import annotations

import bisect
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

from .base import RawRecord, SourceError

DEFAULT_POLL_RECORDS = 500


class FileSource:
    """A :class:`~sentinel.sources.base.Source` over the lines of one file. ``topic`` names the
    records' topic (default: the file's resolved path); ``max_poll_records`` bounds one poll."""

    name = "file"

    def __init__(self, path: str | Path, *, topic: str | None = None,
                 max_poll_records: int = DEFAULT_POLL_RECORDS):
        self.path = Path(path)
        self.topic = topic
        self.max_poll_records = max(1, int(max_poll_records))
        self.sha256: str | None = None     # of the bytes read, once started
        self._records: list[RawRecord] = []
        self._offsets: list[int] = []      # the records' offsets (line numbers), ascending
        self._next = 0                     # index of the next record poll returns
        self._committed: int | None = None   # the committed position (next offset to read)

    @classmethod
    def from_config(cls, cfg: Any) -> "FileSource":
        """The daemon's file source: ``ingest.file``, relative to the config file's folder."""
        return cls(cfg.resolve_path(cfg.ingest.file), max_poll_records=cfg.kafka.max_poll_records or DEFAULT_POLL_RECORDS)

    @property
    def servers(self) -> list[str]:
        return [str(self.path)]

    def start(self) -> None:
        """Read the file. Raises :class:`SourceError` (operation ``file read``) when it cannot be
        read; ``problem`` is the system's reason (``No such file or directory``)."""
        if self.sha256 is not None:
            return
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SourceError("file read", str(self.path), exc.strerror or str(exc)) from None
        topic = self.topic if self.topic is not None else str(self.path.resolve())
        self._records = [RawRecord(topic, 0, lineno, None, line, None)
                         for lineno, line in enumerate(data.splitlines(), 1) if line.strip()]
        self._offsets = [r.offset for r in self._records]
        self.sha256 = hashlib.sha256(data).hexdigest()

    def poll(self, timeout_ms: int | None = None) -> list[RawRecord]:
        """The next lines, at most ``max_poll_records``. At the end of the file an empty list,
        after waiting ``timeout_ms`` (a daemon polling a finished file does not spin)."""
        self._require()
        out = self._records[self._next:self._next + self.max_poll_records]
        self._next += len(out)
        if not out and timeout_ms:
            time.sleep(timeout_ms / 1000)
        return out

    def rewind(self, records: Sequence[RawRecord]) -> None:
        """The next poll returns ``records`` again (and the lines after them)."""
        if records:
            self._next = min(self._next, bisect.bisect_left(self._offsets, min(r.offset for r in records)))

    def commit(self, records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
        """Note the position after ``records`` (in memory: nothing outlives the process)."""
        if not records:
            return {}
        position = max(r.offset for r in records) + 1
        if self._committed is not None and position <= self._committed:
            return {}
        self._committed = position
        return {(records[0].topic, 0): position}

    def lag(self) -> int | None:
        """Lines not yet polled; None before :meth:`start`."""
        return len(self._records) - self._next if self.sha256 is not None else None

    def ping(self) -> bool:
        """The file is still there and readable."""
        return self.path.is_file() and os.access(self.path, os.R_OK)

    def close(self) -> None:
        """Forget the file's lines (a later :meth:`start` reads it again). Idempotent."""
        self._records, self._offsets, self._next, self.sha256 = [], [], 0, None

    def _require(self) -> None:
        if self.sha256 is None:
            raise SourceError("file poll", str(self.path), "the source is not started")
