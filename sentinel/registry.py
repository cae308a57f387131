"""Plug-ins chosen by name: a short name maps to an import string; anything else that looks like
``module:Attr`` is imported as is (the way uvicorn's config resolves its lifespan/loop classes)."""
from __future__ import annotations

import importlib
from typing import Any

from .errors import SentinelError


class PluginError(SentinelError, LookupError):
    def __init__(self, kind: str, name: str, problem: str):
        self.kind, self.name = kind, name
        super().__init__(f"{kind} {name!r}: {problem}")


def resolve(kind: str, name: str, builtins: dict[str, str]) -> Any:
    """Return the object registered as ``name`` in ``builtins`` or imported from ``module:Attr``."""
    target = builtins.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(builtins))
        raise PluginError(kind, name, f"unknown; built-in {kind}s are: {known} (or give 'module:Class')")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(kind, name, f"cannot import module {module_name!r} ({exc})") from exc
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise PluginError(kind, name, f"module {module_name!r} has no attribute {attr!r}") from exc
    return obj
