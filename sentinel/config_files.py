"""Which kind of YAML file is this: the peek ``sentinel validate`` takes before choosing a loader.
(Which daemon configs name a policy file: :func:`sentinel.incidents.escalation.configs_naming`.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def peek_yaml(path: str | Path) -> Any:
    """The parsed file, or None if it cannot be read or parsed (the loader reports why later)."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def is_suite_file(raw: Any) -> bool:
    """A suite file (``checks/*.yaml``) has a top-level ``suite`` key; a daemon config's ``pairs``
    is a mapping where a suite's is a list of names."""
    return isinstance(raw, dict) and "suite" in raw and not isinstance(raw.get("pairs"), dict)
