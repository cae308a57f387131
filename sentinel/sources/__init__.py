"""Sources: where traffic records come from (see :mod:`sentinel.sources.base` for the contract).

Implementations are imported by name through :data:`SOURCES`, so importing this package does
not import any client library.
"""
from .base import SOURCES, RawRecord, Source, SourceError

__all__ = ["SOURCES", "RawRecord", "Source", "SourceError"]
