"""Sentinel's configuration: one YAML file, validated by pydantic models that reject unknown keys.

Loading is two passes (as alibi-detect does): parse and validate the raw file, then resolve what it
refers to (relative paths against the file's folder, secrets from env or files) and check those.
Every value can be overridden by an environment variable ``SENTINEL_<PATH>`` where nested keys are
joined with ``__``: ``SENTINEL_STORE__URL``, ``SENTINEL_KAFKA__BOOTSTRAP_SERVERS=a:9092,b:9092``,
``SENTINEL_PAIRS__TRIAGE__BATCH_SIZE=64``. Values are parsed as YAML scalars.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from .errors import ConfigError
from .redact import SECRETS, url_secrets
from .suggest import did_you_mean

M = TypeVar("M", bound=BaseModel)

ENV_PREFIX = "SENTINEL_"


class Strict(BaseModel):
    # extra='forbid' so a misspelt key fails loudly instead of being silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=False)


class StoreConfig(Strict):
    url: str = "sqlite:///sentinel.db"
    echo: bool = False


POLL_RECORDS = {"kafka-python": 5_000, "confluent": 10_000}


class KafkaConfig(Strict):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    topic: str = "traffic"
    labels_topic: str | None = None
    group_id: str = "sentinel"
    client_id: str = "sentinel"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # kafka-python's default 45 s session makes a group join wait ~23 s (PITFALLS.md);
    # 10 s keeps failover reasonable and joins in a few seconds.
    session_timeout_ms: int = Field(10000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    # records per poll, and so per store transaction and offset commit; None: the client's own
    # default (POLL_RECORDS: 5,000 for kafka-python, 10,000 for confluent: the store transaction,
    # its queries and the synchronous commit per batch would otherwise bound the rate; a poll
    # returns what has been fetched, so a small flow does not wait for a full batch)
    max_poll_records: int | None = Field(None, ge=1)
    poll_timeout_ms: int = Field(500, ge=10)
    # Where a traffic message's id comes from for the sampling decision, taken before the full
    # decode (README, Operations: performance): "body" reads the top-level "id" of the JSON
    # value; "key" trusts the record key (UTF-8) to be that id, as producers keyed by id send it.
    id_from: Literal["body", "key"] = "body"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # How fast the consumer comes back after a broker restart (README, Operations: readiness).
    # kafka-python doubles the wait between reconnects up to reconnect_backoff_max_ms (30 s by
    # default, which left the first sample ~30 s after the broker was back); a 2 s cap still
    # keeps an unreachable broker down to one connection attempt every 2 s per node.
    reconnect_backoff_ms: int = Field(100, ge=1)
    reconnect_backoff_max_ms: int = Field(2000, ge=1)
    retry_backoff_ms: int = Field(200, ge=1)
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None   # name of the env var holding the password (never in the file)
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    # which client library the `kafka` source runs on: kafka-python (pure Python) or confluent
    # (librdkafka through confluent-kafka: ~40x the raw consume rate here, PITFALLS.md)
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    # kafka-python only: its consumer (fetching and parsing records: all of a raw consumer's CPU,
    # ~8 µs a message here) runs in a child process that reads the next batches while the daemon
    # decodes and stores this one, on another core (sentinel/sources/process.py); false: in the
    # daemon's own process, one stage after the other
    consumer_process: bool = True

    @property
    def poll_records(self) -> int:
        """``max_poll_records``, or the default of ``client``."""
        return self.max_poll_records or POLL_RECORDS[self.client]

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v


class IngestConfig(Strict):
    """Where traffic comes from: ``source`` names a built-in source (``kafka``, ``file``: see
    ``sentinel.sources.base.SOURCES``) or a ``module:Class``; ``file`` is the JSON-lines file the
    ``file`` source reads (relative to the config file). ``max_message_bytes``: a traffic message
    longer than this is quarantined ``too_large``."""
    source: str = "kafka"
    file: str | None = None
    max_message_bytes: int = Field(1_000_000, ge=1024, le=64_000_000)

    @model_validator(mode="after")
    def _file_given(self) -> "IngestConfig":
        if self.source == "file" and not self.file:
            raise ValueError("source 'file' needs ingest.file, the JSON-lines file to read")
        return self


OutputKind = Literal["probabilities", "logits", "multilabel", "multilabel_logits"]


class ModelSpec(Strict):
    """One model file. ``output``: what its scores are (``probabilities``/``logits`` of one label
    per row; ``multilabel``/``multilabel_logits``: an independent probability, or logit, per label).
    ``output_name``: the graph output holding the scores (default: the first).
    ``embedding_output``: a graph output holding a per-row embedding, for embedding drift.
    ``float_reference`` (candidate): the float ONNX graph the candidate was quantized from, for
    ``sentinel diagnose`` (docs/diagnose.md); without it a diagnosis compares outputs only."""
    path: str
    runtime: str = "onnxruntime"        # torch | onnxruntime | module:Class
    output: OutputKind = "probabilities"
    output_name: str | None = None
    embedding_output: str | None = None
    threads: int | None = Field(None, ge=1)
    providers: list[str] | None = None
    float_reference: str | None = None


class DiagnoseConfig(Strict):
    """``sentinel diagnose`` per pair (docs/diagnose.md): SQNR floors in dB for activations and
    weights (``null``: the default for how the candidate is quantized: 40 dynamic, 30 static
    per-tensor, 35 per-channel), the most flipped rows used (and as many agreeing rows, but at least
    ``min_agreeing`` so the floors are not judged on a handful), how many layers to name.
    ``auto``: diagnose every run whose decision_flips, calibration or robustness result fails,
    right after it is stored (the result is kept in the run's record; ``false``: on demand only)."""
    auto: bool = True
    sqnr_floor_db: float | None = None
    weight_sqnr_floor_db: float | None = None
    max_rows: int = Field(500, ge=1, le=100_000)
    min_agreeing: int = Field(100, ge=1, le=100_000)
    top: int = Field(3, ge=1, le=50)


class InputConfig(Strict):
    """Per model input: ``pad`` fills its dynamic dimensions when rows of different lengths share
    a batch (e.g. the tokenizer's pad id for ``input_ids``)."""
    pad: float = 0


class TextConfig(Strict):
    """A pair whose messages may carry ``"text"``: ``tokenizer`` is a ``tokenizer.json`` for the
    ``tokenizers`` library (relative to the config file, read offline), ``max_length`` the token
    limit (longer texts are truncated and counted); the ``*_input`` keys name the model inputs the
    token ids, attention mask and token type ids go to (``null``: the model takes none)."""
    tokenizer: str
    max_length: int = Field(128, ge=2, le=65536)
    ids_input: str = "input_ids"
    mask_input: str | None = "attention_mask"
    type_ids_input: str | None = None


class CheckSpec(Strict):
    """One configured check. ``warn``/``fail`` are levels on the check's value (its meaning is the
    check's: a rate, a ratio...); ``min_samples`` below which the result is ``insufficient_data``."""
    type: str
    name: str | None = None
    warn: float | None = None
    fail: float | None = None
    min_samples: int = Field(100, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def check_name(self) -> str:
        return self.name or self.type


def default_checks() -> list[CheckSpec]:
    return [
        CheckSpec(type="decision_flips", warn=0.02, fail=0.05, min_samples=100,
                  params={"critical_warn": 0.01, "critical_fail": 0.03}),
        # candidate vs baseline in the same run: warn when the speed-up is gone, fail when the
        # candidate is clearly slower (levels are candidate/baseline latency ratios)
        CheckSpec(type="latency_p95", warn=1.0, fail=1.5, min_samples=20),
        # candidate vs its own accepted history on the same hardware/software fingerprint
        CheckSpec(type="perf_history", warn=1.05, fail=1.08, min_samples=200),
        # production latency carried by the messages (``served_latency_ms``) vs earlier windows
        CheckSpec(type="latency_served", warn=1.10, fail=1.25, min_samples=100),
    ]


CANDIDATE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"   # a simple identifier: int8, pruned50, distilled


class PairConfig(Strict):
    """One model pair: a baseline and either one ``candidate`` or several named ``candidates``
    (``{int8: ..., pruned50: ...}``: each judged against the same baseline outputs, README
    "Comparing candidates"); exactly one of the two keys."""
    baseline: ModelSpec
    candidate: ModelSpec | None = None
    candidates: dict[str, ModelSpec] | None = None
    classes: list[str] = Field(min_length=2)
    critical_classes: list[str] = Field(default_factory=list)
    features: list[str] | None = None   # order of named features in `inputs` objects
    batch_size: int = Field(256, ge=1)
    # typed inputs (sentinel.tensors): per-input pad values, raw text, what the inputs are
    inputs: dict[str, InputConfig] = Field(default_factory=dict)
    text: TextConfig | None = None
    modality: Literal["auto", "tabular", "text", "image", "tensor"] = "auto"
    image_layout: Literal["NCHW", "NHWC"] = "NCHW"
    # rows of different lengths: "bucket" sorts each window by length before batching (less
    # padding), "pad" batches in window order; either pads each batch to its longest row
    batching: Literal["bucket", "pad"] = "bucket"
    interval_seconds: float | None = Field(None, gt=0)   # overrides revalidation.interval_seconds
    checks: list[CheckSpec] | None = None                # overrides the top-level checks
    diagnose: DiagnoseConfig = Field(default_factory=DiagnoseConfig)

    @field_validator("candidates")
    @classmethod
    def _candidate_names(cls, v: dict[str, ModelSpec] | None) -> dict[str, ModelSpec] | None:
        import re

        if v is None:
            return v
        if not v:
            raise ValueError("candidates is empty: list at least one candidate (name: {path: ...})")
        bad = [name for name in v if not re.match(CANDIDATE_NAME, name)]
        if bad:
            raise ValueError(f"candidate name {bad[0]!r} is not a simple identifier (letters, digits, _; "
                             f"not starting with a digit; at most 64 characters)")
        return v

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """The unused one of candidate/candidates is left out: a single-candidate pair dumps (and
        hashes, ``Config.config_hash``) exactly as before ``candidates`` existed."""
        out = handler(self)
        for key in ("candidate", "candidates"):
            if out.get(key, 0) is None:
                out.pop(key)
        return out

    @property
    def multi(self) -> bool:
        """Several named candidates (``candidates:``) rather than one ``candidate:``."""
        return self.candidates is not None

    def candidate_specs(self) -> dict[str | None, ModelSpec]:
        """Each candidate's spec by name; a single ``candidate:`` is the one unnamed (None) entry."""
        if self.candidates is not None:
            return dict(self.candidates)
        assert self.candidate is not None
        return {None: self.candidate}

    def candidate_spec(self, name: str | None = None) -> ModelSpec:
        """The spec of candidate ``name`` (None: the single candidate, or the first listed)."""
        specs = self.candidate_specs()
        return specs[name] if name is not None else next(iter(specs.values()))

    @model_validator(mode="after")
    def _one_candidate_key(self) -> "PairConfig":
        if (self.candidate is None) == (self.candidates is None):
            raise ValueError("give exactly one of candidate (one model) and candidates (several, by name)"
                             + ("; both are set" if self.candidate is not None else "; neither is set"))
        return self

    @model_validator(mode="after")
    def _critical_in_classes(self) -> "PairConfig":
        unknown = [c for c in self.critical_classes if c not in self.classes]
        if unknown:
            raise ValueError(f"critical_classes {unknown} are not in classes {self.classes}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has duplicates: {self.classes}")
        return self


class SamplingConfig(Strict):
    rate: float = Field(1.0, gt=0, le=1)
    window: int = Field(10000, ge=1)
    seed: int = 0
    stratify_by: list[str] = Field(default_factory=list)   # attributes: one window per combination
    max_strata: int = Field(20, ge=1)                       # more strata than this share "(other)"


class RevalidationConfig(Strict):
    interval_seconds: float = Field(300, gt=0)
    seed: int = 0
    misfire_grace_seconds: int = Field(60, ge=1)
    min_samples: int = Field(1, ge=1)   # a run with fewer pending samples is skipped (not stored)
    # on SIGTERM the revalidation in progress gets this long to finish before it is cut short
    shutdown_grace_seconds: float = Field(6.0, ge=0, le=60)


class PerfConfig(Strict):
    """How each revalidation measures speed and memory (docs/performance.md).

    ``budget_seconds`` is the wall time the interleaved timing may use per revalidation, split
    between batch 1 and the serving batch size; ``threads`` is the intra-op thread count used for
    a model whose own ``threads`` is unset (set, not left to the engine, so runs are comparable).
    """
    enabled: bool = True
    budget_seconds: float = Field(4.0, gt=0, le=300)
    warmup_seconds: float = Field(0.3, ge=0, le=60)
    max_calls: int = Field(20000, ge=10)        # per role and batch size
    threads: int = Field(1, ge=1)
    memory: bool = True                         # peak RSS of each session, in a fresh subprocess
    energy: bool = True                         # RAPL/NVML counters where readable (perf/energy.py)
    energy_seconds: float = Field(1.0, ge=0, le=60)   # per role; nothing is spent without a counter
    history_runs: int = Field(5, ge=1, le=100)  # accepted runs pooled as the reference
    # copy each accepted candidate file here (content-addressed) so a redeployed candidate is
    # timed against it in the same run (sentinel/perf/accepted.py); relative to the config file
    keep_accepted_models: bool = True
    accepted_models_dir: str = "accepted-models"
    # fresh sessions of each file for that A/B timing, created in balanced order (a session's
    # place in memory biases its speed by a few percent); 1 halves the memory but keeps the bias
    ab_sessions: int = Field(2, ge=1, le=4)
    served_latency_field: str = "served_latency_ms"


class IncidentsConfig(Strict):
    """How check results become incidents (see ``sentinel.incidents.engine``)."""
    runbook_url: str | None = None
    runbooks: dict[str, str] = Field(default_factory=dict)      # check name -> runbook URL (wins)
    open_on: list[Literal["warn", "fail"]] = Field(default_factory=lambda: ["fail"])
    open_after: int = Field(1, ge=1)          # consecutive failing runs before an incident opens
    resolve_after: int = Field(0, ge=0)       # consecutive passing runs that auto-resolve; 0 = people only
    reopen_window: str | float = 0.0          # a failure within this long of resolution reopens (e.g. 1h)
    group_slices: bool = True                 # one incident per check, listing its failing slices

    @field_validator("reopen_window")
    @classmethod
    def _window(cls, v: Any) -> Any:
        from .durations import parse_duration

        if parse_duration(v) < 0:
            raise ValueError(f"must not be negative, got {v!r}")
        return v


class NotifierConfig(Strict):
    type: str = "webhook"
    url: str | None = None
    url_env: str | None = None
    secret_env: str | None = None      # HMAC key for the signature header
    timeout_seconds: float = Field(5.0, gt=0)
    # 20 attempts with 1 s doubling backoff capped at 300 s keep retrying for about an hour: a
    # receiver outage of a few minutes must not turn owed pages into failed rows.
    max_attempts: int = Field(20, ge=1)
    backoff_seconds: float = Field(1.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)   # type-specific settings of plug-in notifiers


class ApiConfig(Strict):
    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    token_env: str = "SENTINEL_API_TOKEN"
    token_file: str | None = None
    public_reads: bool = True
    # request bodies above this are refused with 413 before they are read further (api.py)
    max_body_bytes: int = Field(1_000_000, ge=1)
    # the address people reach the daemon at (https://sentinel.example.org): notifications and
    # API responses link to console pages under it (sentinel/links.py); unset, links are paths
    public_url: str | None = None
    # who may do what (sentinel/users.py): a YAML file of {name, role, token_sha256} and/or an
    # env var holding the same YAML; the shared token above keeps working as an admin
    users_file: str | None = None
    users_env: str = "SENTINEL_USERS"
    # reads (API and console pages; not /healthz, /readyz, /metrics): open, or signed-in users only.
    # Unset: open unless public_reads is false (the older switch)
    read_access: Literal["open", "authenticated"] | None = None
    # console sessions are signed with this secret (env var or file); unset, a random one per
    # process: sessions end at restart and do not cross replicas
    session_secret_env: str = "SENTINEL_SESSION_SECRET"
    session_secret_file: str | None = None
    session_hours: float = Field(12, gt=0, le=24 * 30)
    # Swagger UI at /docs loads its assets from a CDN (blank offline): off unless asked for;
    # /openapi.json is always served
    docs: bool = False

    def reads_open(self) -> bool:
        return self.read_access == "open" if self.read_access is not None else self.public_reads


class HealthConfig(Strict):
    """When ``/readyz`` calls a part failing (README, Operations: readiness)."""
    # ingest neither stored anything nor was caught up (lag 0) for this long while records wait:
    # /readyz names "ingest" and sentinel_ingest_stalled is 1
    stall_seconds: float = Field(120, gt=0)
    # broker TCP checks and store write probes are reused this long (keeps /readyz cheap)
    cache_seconds: float = Field(2.0, ge=0, le=60)
    # with no successful store write for this long, /readyz probes that writes are allowed
    # (a row inserted and rolled back); 0 turns the probe off
    write_probe_seconds: float = Field(10, ge=0)
    # the consumer without a group coordinator this long (broker reachable or not) is "broker"
    coordinator_grace_seconds: float = Field(15, gt=0)
    # a pair's revalidation this far past its due time, or one running longer than
    # max_run_seconds, is "scheduler"
    schedule_overdue_seconds: float = Field(120, gt=0)
    max_run_seconds: float = Field(3600, gt=0)


class GrafanaConfig(Strict):
    """Run and incident annotations pushed to Grafana (``sentinel.grafana``) when ``url`` is set:
    the token (a service-account token allowed to write annotations) from ``token_env`` or
    ``token_file``, the annotations attached to the dashboard ``dashboard_uid``. A Grafana that
    refuses or cannot be reached is logged; it never stops a run or the daemon."""
    url: str | None = None
    token_env: str = "GRAFANA_TOKEN"
    token_file: str | None = None
    dashboard_uid: str | None = "sentinel-overview"
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class ReplicasConfig(Strict):
    """Several daemons on one PostgreSQL store (docs/deploy.md, Several replicas). ``lease_seconds``:
    how long a schedule lease, an outbox delivery claim and a replica's heartbeat hold without
    being renewed (renewed every third of it); a dead replica's work is taken over within it."""
    lease_seconds: float = Field(30.0, ge=3, le=600)


class LoggingConfig(Strict):
    level: str = "INFO"
    format: Literal["json", "text"] = "json"


class Config(Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    pairs: dict[str, PairConfig] = Field(min_length=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    revalidation: RevalidationConfig = Field(default_factory=RevalidationConfig)
    perf: PerfConfig = Field(default_factory=PerfConfig)
    checks: list[CheckSpec] = Field(default_factory=default_checks)
    suites: list[str] = Field(default_factory=list)
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    notifiers: dict[str, NotifierConfig] = Field(default_factory=dict)
    escalation: str | None = None     # policy file(s), a path or glob: alerts/*.yaml
    reports_dir: str = "reports"
    api: ApiConfig = Field(default_factory=ApiConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    grafana: GrafanaConfig = Field(default_factory=GrafanaConfig)
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    # not part of the file: where it came from, for messages and relative paths
    source: str = Field("<config>", exclude=True)
    base_dir: str = Field(".", exclude=True)

    def checks_for(self, pair: str) -> list[CheckSpec]:
        own = self.pairs[pair].checks
        return list(own) if own is not None else list(self.checks)

    def interval_for(self, pair: str) -> float:
        return self.pairs[pair].interval_seconds or self.revalidation.interval_seconds

    def resolve_path(self, p: str) -> Path:
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else Path(self.base_dir) / path

    def config_hash(self) -> str:
        """sha256 of the validated config (canonical JSON): what a run records for reproducibility."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading


def _field_path_model(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of ``loc`` (dict keys and list indexes skipped)."""
    import typing

    current: Any = root
    i = 0
    parts = list(loc[:-1])
    while i < len(parts):
        part = parts[i]
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        skip = 0
        while typing.get_origin(ann) is not None:
            origin = typing.get_origin(ann)
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if origin in (dict, list):
                skip += 1
            ann = args[-1] if args else ann
        current = ann
        i += 1 + skip
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _format_error(root: type[BaseModel], err: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc)
    if err.get("type") == "extra_forbidden" and loc:
        owner = _field_path_model(root, loc)
        valid = sorted(owner.model_fields) if owner else []
        valid = [v for v in valid if v not in ("source", "base_dir")]
        hint = did_you_mean(str(loc[-1]), valid, cutoff=0.5, listing="valid keys")
        return key, f"unknown key{hint}"
    if err.get("type") == "missing":
        return key, "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return key, msg


def validate_file(model: type[M], raw: Any, source: str, expected: str) -> M:
    """Validate a parsed YAML file against ``model``; the first problem is a one-line ConfigError
    naming the file and the key. ``expected`` describes the top level for a non-mapping file."""
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"expected {expected}, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        key, problem = _format_error(model, exc.errors()[0])
        raise ConfigError(source, key, problem) from None


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Overlay ``SENTINEL_A__B=value`` onto the raw mapping; returns the variables applied."""
    applied = []
    skip = {"SENTINEL_API_TOKEN", "SENTINEL_CONFIG"}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in skip:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        # only keys that are config sections; unrelated SENTINEL_* variables (secrets named by
        # *_env keys) are left alone
        if path[0] not in Config.model_fields or path[0] in ("source", "base_dir"):
            continue
        value = yaml.safe_load(environ[name]) if environ[name] != "" else ""
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
        applied.append(name)
    return applied


def parse_config(raw: Any, *, source: str = "<config>", base_dir: str | Path = ".",
                 environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed mapping. Raises ConfigError (one line) on the first problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"expected a mapping at the top level, got {type(raw).__name__}")
    raw = json.loads(json.dumps(raw, default=str))  # deep copy, plain types
    applied = _apply_env(raw, os.environ if environ is None else environ)
    try:
        cfg = Config.model_validate({**raw, "source": source, "base_dir": str(base_dir)})
    except ValidationError as exc:
        errs = exc.errors()
        key, problem = _format_error(Config, errs[0])
        more = f" (+{len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        env_note = f" [env overrides applied: {', '.join(applied)}]" if applied else ""
        raise ConfigError(source, key, problem + more + env_note) from None
    return cfg


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    return parse_config(read_yaml(path), source=str(path), base_dir=path.resolve().parent, environ=environ)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a one-line ConfigError naming the file (and line) when it cannot be
    read or parsed."""
    src = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(src, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(src, "", f"cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(src, "", f"{where}not valid YAML ({problem})") from None
    return raw


def read_secret(env_name: str | None, file: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """A secret from an env var or a file (Kubernetes secret mount). Never logged."""
    env = os.environ if environ is None else environ
    if env_name and env.get(env_name):
        return env[env_name]
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError:
            return None
    return None


def config_secrets(cfg: Any, environ: Any = None) -> list[str]:
    """Every secret value a ``Config`` names: the API token, the store URL's password, the SASL
    password, and each notifier's URL (``url``/``url_env``), ``secret_env`` and every
    ``params.*_env`` / ``params.*_file`` value (routing keys, SMTP passwords...)."""
    out: list[str | None] = [read_secret(cfg.api.token_env, cfg.api.token_file, environ=environ)]
    out.append(read_secret(cfg.grafana.token_env, cfg.grafana.token_file, environ=environ))
    out += _store_secrets(cfg.store.url)
    k = cfg.kafka
    out.append(read_secret(k.sasl_password_env, k.sasl_password_file, environ=environ))
    for ncfg in cfg.notifiers.values():
        out += url_secrets(ncfg.url)
        out += url_secrets(read_secret(ncfg.url_env, environ=environ))
        out.append(read_secret(ncfg.secret_env, environ=environ))
        for key, value in (ncfg.params or {}).items():
            if isinstance(value, str) and key.endswith("_env"):
                out.append(read_secret(value, environ=environ))
            elif isinstance(value, str) and key.endswith("_file"):
                out.append(read_secret(None, value, environ=environ))
    return [v for v in out if v]


def _store_secrets(url: str) -> list[str]:
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # an unparsable URL fails later, with its own (redacted) error
        return []
    return [str(password)] if password else []


def register_secrets(cfg: Any, environ: Any = None) -> None:
    """Add every secret ``cfg`` names to ``SECRETS`` (call once at start): from then on no log line
    shows one of them."""
    SECRETS.add(*config_secrets(cfg, environ))
