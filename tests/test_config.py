import pytest

from sentinel.config import load_config, parse_config
from sentinel.errors import ConfigError

MINIMAL = {"pairs": {"triage": {"baseline": {"path": "b.pt2", "runtime": "torch"},
                                "candidate": {"path": "c.onnx"}, "classes": ["a", "b"],
                                "critical_classes": ["b"]}}}


def write(tmp_path, text):
    p = tmp_path / "sentinel.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path):
    cfg = parse_config(MINIMAL, environ={})
    assert cfg.store.url == "sqlite:///sentinel.db"
    assert [c.type for c in cfg.checks] == ["decision_flips", "latency_p95", "perf_history", "latency_served"]
    assert cfg.kafka.session_timeout_ms == 10000


def test_misspelt_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "kafka:\n  topc: traffic\npairs: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    msg = str(e.value)
    assert str(p) in msg and "kafka.topc" in msg and "did you mean 'topic'" in msg
    assert "\n" not in msg


def test_misspelt_key_inside_a_pair(tmp_path):
    raw = {"pairs": {"triage": {**MINIMAL["pairs"]["triage"], "critical_clases": ["b"]}}}
    with pytest.raises(ConfigError, match=r"pairs\.triage\.critical_clases: unknown key \(did you mean 'critical_classes'\?\)"):
        parse_config(raw, source="x.yaml", environ={})


def test_misspelt_key_inside_a_check_list(tmp_path):
    raw = {**MINIMAL, "checks": [{"type": "decision_flips", "warnn": 0.1}]}
    with pytest.raises(ConfigError, match=r"checks\.0\.warnn: unknown key \(did you mean 'warn'\?\)"):
        parse_config(raw, environ={})


def test_critical_class_must_be_a_class():
    raw = {"pairs": {"triage": {**MINIMAL["pairs"]["triage"], "critical_classes": ["zzz"]}}}
    with pytest.raises(ConfigError, match="critical_classes"):
        parse_config(raw, environ={})


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "pairs:\n  a: [\n")
    with pytest.raises(ConfigError, match=r"line \d+ column \d+: not valid YAML"):
        load_config(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config("nope.yaml")


def test_env_overrides_nested_values_and_lists():
    env = {"SENTINEL_STORE__URL": "postgresql+psycopg://db/x", "SENTINEL_KAFKA__BOOTSTRAP_SERVERS": "a:1,b:2",
           "SENTINEL_PAIRS__TRIAGE__BATCH_SIZE": "64", "SENTINEL_API_TOKEN": "secret-not-config",
           "SENTINEL_SAMPLING__RATE": "0.25"}
    cfg = parse_config(MINIMAL, environ=env)
    assert cfg.store.url == "postgresql+psycopg://db/x"
    assert cfg.kafka.bootstrap_servers == ["a:1", "b:2"]
    assert cfg.pairs["triage"].batch_size == 64
    assert cfg.sampling.rate == 0.25


def test_env_override_with_bad_value_names_the_variable():
    with pytest.raises(ConfigError, match="SENTINEL_SAMPLING__RATE"):
        parse_config(MINIMAL, environ={"SENTINEL_SAMPLING__RATE": "2"})


def test_config_hash_is_stable_and_sensitive():
    a = parse_config(MINIMAL, environ={})
    b = parse_config(MINIMAL, environ={})
    c = parse_config(MINIMAL, environ={"SENTINEL_SAMPLING__SEED": "3"})
    assert a.config_hash() == b.config_hash() != c.config_hash()


def test_relative_model_paths_resolve_against_the_config_folder(tmp_path):
    p = write(tmp_path, "pairs:\n  t:\n    baseline: {path: m/b.pt2, runtime: torch}\n"
                        "    candidate: {path: m/c.onnx}\n    classes: [x, y]\n")
    cfg = load_config(p, environ={})
    assert cfg.resolve_path(cfg.pairs["t"].baseline.path) == tmp_path / "m" / "b.pt2"
