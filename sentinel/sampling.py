"""Sampling: which messages Sentinel keeps, per model pair.

Every message gets a key, a uniform number in [0, 1) fixed by (seed, pair, id). A message is kept
when its key is below ``rate``; each pair's window then holds the ``window`` kept messages with the
smallest keys (bottom-k sampling, the order-free form of a reservoir: a uniform random sample of
everything seen since the last run, bounded in size). Because the decision depends only on the id,
a message redelivered after a crash gets the same decision, two replicas agree, and a run can be
reproduced from its seed. The store applies the rate and the window when it writes
(``Store.ingest``; the rate test is ``sentinel.storage.repository.in_sample``). A full window
is a bar like the rate: a message whose key is above its largest pending key cannot enter it, so
the daemon leaves such messages undecoded, against the bar the store reported for the last batch
and checks again when it writes this one (``daemon.read_and_store``).

Stratified sampling (``stratify_by: [region]``) keeps one such window per stratum, so a rare
group (a small region, a protected attribute value) keeps enough samples for per-slice checks
instead of being crowded out by the common ones; ``max_strata`` bounds the number of windows.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Sampler:
    rate: float = 1.0
    window: int = 10000
    seed: int = 0
    stratify_by: tuple[str, ...] = ()

    def stratum(self, attributes: dict[str, str]) -> str:
        """The message's stratum: the values of the ``stratify_by`` attributes (a missing one is
        empty), e.g. ``region=eu,age_band=60+``; "" when sampling is not stratified."""
        return ",".join(f"{k}={attributes.get(k, '')}" for k in self.stratify_by)

    def key(self, pair: str, msg_id: str) -> float:
        h = hashlib.blake2b(f"{self.seed}\x1f{pair}\x1f{msg_id}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2**64

    def keys(self, pair: str, msg_ids: Sequence[str]) -> np.ndarray:
        """:meth:`key` of each of ``msg_ids`` (one pair), as float64, bit for bit: the hash of a
        copy of the pair's prefix state, the digests read as big-endian uint64 at once (numpy
        rounds uint64 to the nearest double as Python's int / 2**64 does; dividing by 2**64 is
        exact). A fraction of the per-message cost, for deciding a whole batch."""
        base = _prefix_state(self.seed, pair)
        digests = []
        for mid in msg_ids:
            h = base.copy()
            h.update(mid.encode())
            digests.append(h.digest())
        return np.frombuffer(b"".join(digests), dtype=">u8").astype(np.float64) / 2.0**64


@lru_cache(maxsize=256)
def _prefix_state(seed: int, pair: str) -> "hashlib._Hash":
    return hashlib.blake2b(f"{seed}\x1f{pair}\x1f".encode(), digest_size=8)
