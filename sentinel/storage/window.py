"""A run's samples as the store reads them: :class:`Sample` (one stored or file-read sample) and
:class:`Window` (a claimed window held by column: one numpy array per input and layout, and one
list per other field, instead of an object and a dict per sample)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from ..tensors import Row, Rows

FIELDS = ("id", "pair", "msg_id", "ts", "topic", "partition", "offset", "attributes", "label", "extra", "text")
#: what a reference window is made of (besides its inputs): Window.for_reference keeps only these
REFERENCE_FIELDS = ("id", "msg_id", "attributes", "label", "text")


@dataclass(frozen=True, slots=True)   # slots: a file's window holds 100,000s of them
class Sample:
    """A stored sample, or one read from a file (``sentinel revalidate --input``): those have no
    Kafka position, so ``id``, ``ts``, ``topic``, ``partition`` and ``offset`` may be None."""
    id: int | None
    pair: str
    msg_id: str
    ts: dt.datetime | None
    topic: str | None
    partition: int | None
    offset: int | None
    inputs: Row                            # input name -> typed array; sentinel.tensors.adopt maps
                                           # a row stored under another name onto a model's input
    attributes: dict[str, str]
    label: str | None
    extra: dict[str, Any] | None = None    # the message's other fields (e.g. served_latency_ms)
    text: str | None = None                # the raw text the inputs were made from, if any


class Window(Sequence[Sample]):
    """Samples held by column. ``window[i]`` (and iterating) makes the :class:`Sample` as the store
    gave it before (its own ``attributes`` and ``extra`` dicts, inputs viewing the columns);
    :meth:`column` gives one field of every sample without making them (the ``attributes`` and
    ``extra`` dicts in it are shared between samples of equal value: read them, never change them);
    ``rows`` are the inputs (sentinel.tensors.Rows)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {f: [] for f in FIELDS}
        self.rows = Rows()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        c = self.columns
        extra = c["extra"][i]
        return Sample(id=c["id"][i], pair=c["pair"][i], msg_id=c["msg_id"][i], ts=c["ts"][i], topic=c["topic"][i],
                      partition=c["partition"][i], offset=c["offset"][i], inputs=self.rows[i],
                      attributes=dict(c["attributes"][i]), label=c["label"][i],
                      extra=dict(extra) if isinstance(extra, dict) else extra, text=c["text"][i])

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def column(self, name: str) -> list[Any]:
        """Every sample's ``name`` field (one of :data:`FIELDS`), in order."""
        return self.columns[name]

    def add(self, blobs: Sequence[bytes], fields: dict[str, list[Any]]) -> None:
        """Append samples: their stored inputs and every other field's values (same length)."""
        self.rows.extend(blobs)
        for f in FIELDS:
            self.columns[f] += fields[f]

    def for_reference(self) -> "Window":
        """This window as a reference window needs it, to keep between runs: the same inputs, ids,
        message ids, attributes, labels and texts (shared, not copied); no times, positions or
        extra fields (one list of None stands for each), about a third of a window's memory."""
        if self.columns["ts"] is self.columns["offset"]:
            return self
        out = Window()
        out.rows = self.rows
        none = [None] * len(self)
        out.columns = {f: self.columns[f] if f in REFERENCE_FIELDS else none for f in FIELDS}
        return out

    def relabelled(self, labels: dict[int, str]) -> "Window":
        """This window with ``labels`` (sample id -> label) in place of its labels: the same
        samples (every column but ``label`` shared, not copied), or itself when nothing changes."""
        ids, now = self.columns["id"], self.columns["label"]
        changed = {i: lab for i, sid in enumerate(ids) if (lab := labels.get(sid, now[i])) != now[i]} if labels else {}
        if not changed:
            return self
        out = Window()
        out.rows, out.columns = self.rows, dict(self.columns)
        out.columns["label"] = [changed.get(i, v) for i, v in enumerate(now)]
        return out

    @classmethod
    def joined(cls, windows: Sequence["Window"]) -> "Window":
        """The samples of ``windows`` one after the other (their columns shared, not copied)."""
        out = cls()
        for w in windows:
            out.rows.join(w.rows)
            for f in FIELDS:
                out.columns[f] += w.columns[f]
        return out


def values(samples: Sequence[Any], name: str) -> list[Any]:
    """Every sample's ``name`` field: a window's column, else read off each sample (None where
    a sample has no such field). Dicts in a window's column are shared: read them only."""
    if isinstance(samples, Window):
        return samples.column(name)
    return [getattr(s, name, None) for s in samples]
