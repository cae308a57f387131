"""Suite files: the check catalogue as configuration (``checks/*.yaml``, named by the daemon
config's ``suites`` globs). Format (unknown keys are rejected, like the daemon config)::

    suite: triage-safety          # name, recorded with every run
    version: 3                    # bump when checks or data sets change
    pairs: [triage]               # optional: the pairs it applies to (default: all)
    defaults:                     # merged into every statistical check's params
      false_alarm_rate: 0.01      # per check and run
      family: holm                # holm | bh
      slice_by: [region]          # message attributes to slice by
    reference:                    # optional; default: the last accepted run's traffic
      kind: last_accepted         # last_accepted | pinned (then file: and sha256:)
      min_rows: 5000              # add earlier accepted runs (newest first) until this many rows
    checks:                       # as the daemon config's checks: type, name, warn, fail, min_samples, params
      - {type: decision_flips, warn: 0.02, fail: 0.05, min_samples: 100}
    scenarios:
      - name: edge_cases
        kind: edge_cases          # edge_cases | adversarial | routine
        file: triage/edge_cases.jsonl     # relative to the suite file
        sha256: 9ab0...
        checks: [{type: decision_flips, fail: 0.10, min_samples: 20}]

Every problem is a one-line ConfigError naming the suite file and the key.
"""
from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import CheckSpec, Config, Strict, read_yaml, validate_file
from ..errors import ConfigError
from ..registry import PluginError, resolve
from .base import CHECKS, Check, build_check
from .params import CheckParamError
from .statistical import StatisticalCheck

SHA256 = r"^[0-9a-fA-F]{64}$"

class Defaults(Strict):
    false_alarm_rate: float | None = Field(None, gt=0, lt=1)
    family: Literal["holm", "bh"] | None = None
    slice_by: list[str] | None = None


class ReferenceSpec(Strict):
    kind: Literal["last_accepted", "pinned"] = "last_accepted"
    min_rows: int = Field(0, ge=0)      # last_accepted: add earlier accepted runs until this many rows
    file: str | None = None
    sha256: str | None = Field(None, pattern=SHA256)

    @model_validator(mode="after")
    def _pinned_needs_file(self) -> "ReferenceSpec":
        if self.kind == "pinned" and (not self.file or not self.sha256):
            raise ValueError("a pinned reference needs file and sha256")
        return self


class ScenarioSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["edge_cases", "adversarial", "routine"]
    file: str
    sha256: str = Field(pattern=SHA256)
    description: str | None = None
    checks: list[CheckSpec] = Field(min_length=1)


class SuiteFile(Strict):
    suite: str
    version: int | str
    description: str | None = None
    pairs: list[str] | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    reference: ReferenceSpec | None = None
    checks: list[CheckSpec] = Field(default_factory=list)
    scenarios: list[ScenarioSpec] = Field(default_factory=list)


@dataclass
class Suite:
    path: str
    name: str
    version: int | str
    sha256: str
    pairs: list[str] | None
    reference: ReferenceSpec | None
    specs: list[CheckSpec] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)     # where each spec came from, for messages

    def applies_to(self, pair: str) -> bool:
        return self.pairs is None or pair in self.pairs

    @property
    def record(self) -> dict[str, Any]:
        return {"file": self.path, "suite": self.name, "version": self.version, "sha256": self.sha256}


def _with_defaults(spec: CheckSpec, defaults: Defaults) -> CheckSpec:
    try:
        cls = resolve("check", spec.type, CHECKS)
    except PluginError:
        return spec        # reported by the build step with the right key
    if not (isinstance(cls, type) and issubclass(cls, StatisticalCheck)):
        return spec
    given = {k: v for k, v in defaults.model_dump().items() if v is not None}
    return spec.model_copy(update={"params": {**given, **spec.params}})


def build_checked(path: str, key: str, spec: CheckSpec) -> Check:
    """Build the check, every problem a one-line ConfigError naming the file and the key: an
    unknown type (``<key>.type``), an unknown or bad param (``<key>.params.<param>``, with a
    did-you-mean hint), or a problem of several params (``<key>``)."""
    try:
        return build_check(spec)
    except PluginError as exc:
        raise ConfigError(path, f"{key}.type", str(exc)) from None
    except CheckParamError as exc:
        raise ConfigError(path, f"{key}.params.{exc.key}", exc.problem) from None
    except ValueError as exc:   # a check rejecting its params as a whole
        raise ConfigError(path, key, f"{exc} (check {spec.check_name!r})") from None


def load_suite(path: str | Path, *, pairs: list[str] | None = None) -> Suite:
    """Read, validate and resolve one suite file (scenario data sets are read and hash-checked)."""
    p = Path(path)
    src = str(p)
    raw = read_yaml(p)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    sf = validate_file(SuiteFile, raw, src, "a mapping with suite, version, checks and/or scenarios")
    if pairs is not None:
        unknown = [x for x in sf.pairs or [] if x not in pairs]
        if unknown:
            raise ConfigError(src, "pairs", f"unknown pair(s) {unknown}; configured pairs are {sorted(pairs)}")
    base = p.resolve().parent
    suite = Suite(src, sf.suite, sf.version, digest, sf.pairs, sf.reference)
    if sf.reference is not None and sf.reference.kind == "pinned":
        suite.reference = sf.reference.model_copy(update={"file": str(_resolve(base, sf.reference.file))})
        from .scenarios import DataSetError, read_rows
        try:
            read_rows(suite.reference.file, suite.reference.sha256)
        except DataSetError as exc:
            raise ConfigError(src, f"reference.{exc.key}", exc.problem) from None
    for i, spec in enumerate(sf.checks):
        spec = _with_defaults(spec, sf.defaults)
        build_checked(src, f"checks.{i}", spec)
        suite.specs.append(spec)
        suite.keys.append(f"checks.{i}")
    for i, sc in enumerate(sf.scenarios):
        inner = [_with_defaults(c, Defaults(false_alarm_rate=sf.defaults.false_alarm_rate, family=sf.defaults.family))
                 .model_dump() for c in sc.checks]
        spec = CheckSpec(type="scenario", name=f"scenario:{sc.name}", min_samples=1, params={
            "file": str(_resolve(base, sc.file)), "sha256": sc.sha256, "kind": sc.kind, "checks": inner,
            "description": sc.description})
        try:
            build_check(spec)
        except CheckParamError as exc:    # the scenario's own keys, or checks.<j>.params.<k> inside it
            raise ConfigError(src, f"scenarios.{i}.{exc.key}", exc.problem) from None
        except PluginError as exc:
            raise ConfigError(src, f"scenarios.{i}.checks", str(exc)) from None
        suite.specs.append(spec)
        suite.keys.append(f"scenarios.{i}")
    return suite


def _resolve(base: Path, f: str) -> Path:
    q = Path(f).expanduser()
    return q if q.is_absolute() else base / q


def load_suites(cfg: Config) -> list[Suite]:
    """Every suite file named by ``cfg.suites`` (globs relative to the config file's folder)."""
    suites = []
    for i, pattern in enumerate(cfg.suites):
        full = str(cfg.resolve_path(pattern))
        files = sorted(glob.glob(full))
        if not files:
            raise ConfigError(cfg.source, f"suites.{i}", f"{pattern!r} matches no file (looked for {full})")
        suites.extend(load_suite(f, pairs=sorted(cfg.pairs)) for f in files)
    return suites


def specs_for_pair(cfg: Config, pair: str, suites: list[Suite]) -> tuple[list[CheckSpec], list[Suite]]:
    """The pair's catalogue: the config's checks (when set explicitly, or when no suite applies:
    then the built-in defaults) plus every applying suite's checks and scenarios. Two checks with
    the same name would share incident fingerprints, so that is an error."""
    mine = [s for s in suites if s.applies_to(pair)]
    explicit = "checks" in cfg.model_fields_set or cfg.pairs[pair].checks is not None
    specs = list(cfg.checks_for(pair)) if explicit or not mine else []
    own = f"pairs.{pair}.checks" if cfg.pairs[pair].checks is not None else "checks"
    for i, spec in enumerate(specs):     # the config's own checks: bad params fail at load, too
        build_checked(cfg.source, f"{own}[{i}]", spec)
    where = {spec.check_name: (cfg.source, f"checks.{i}") for i, spec in enumerate(specs)}
    for s in mine:
        for spec, key in zip(s.specs, s.keys):
            if spec.check_name in where:
                first = where[spec.check_name]
                raise ConfigError(s.path, f"{key}.name", f"check name {spec.check_name!r} is already used by "
                                                         f"{first[0]} {first[1]}; give one of them a distinct name")
            where[spec.check_name] = (s.path, key)
            specs.append(spec)
    return specs, mine
