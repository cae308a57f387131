"""Sampling: which messages Sentinel keeps, per model pair.

Every message gets a key, a uniform number in [0, 1) fixed by (seed, pair, id). A message is kept
when its key is below ``rate``; each pair's window then holds the ``window`` kept messages with the
smallest keys (bottom-k sampling, the order-free form of a reservoir: a uniform random sample of
everything seen since the last run, bounded in size). Because the decision depends only on the id,
a message redelivered after a crash gets the same decision, two replicas agree, and a run can be
reproduced from its seed. The store applies the rate and the window when it writes
(``Store.ingest``; the rate test is ``sentinel.storage.repository.in_sample``).

Stratified sampling (``stratify_by: [region]``) keeps one such window per stratum, so a rare
group (a small region, a protected attribute value) keeps enough samples for per-slice checks
instead of being crowded out by the common ones; ``max_strata`` bounds the number of windows.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


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
