"""The file source: a JSON-lines file read as a Source (offsets are line numbers), chosen by name
from SOURCES, read by the daemon with ``ingest.source: file`` and by ``sentinel revalidate --input``."""
import json
import time

import numpy as np
import pytest

from sentinel.cli import main
from sentinel.config import load_config
from sentinel.app import build
from sentinel.daemon import Daemon
from sentinel.errors import ConfigError
from sentinel.examples.traffic import ordinary_traffic
from sentinel.sources import SOURCES, Source, SourceError
from sentinel.sources.base import build_source
from sentinel.sources.file import FileSource

from pairs import example_config, traffic_lines


def write_lines(path, lines):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_lines_come_back_with_their_line_numbers_in_bounded_polls(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [b'{"id": "a"}', b"", b'{"id": "b"}', b"   ", b'{"id": "c"}', b'{"id": "d"}'])
    src = FileSource(path, max_poll_records=2)
    assert isinstance(src, Source) and src.lag() is None
    src.start()
    assert src.lag() == 4                                   # blank lines are not records
    first = src.poll(0)
    assert [(r.offset, r.value) for r in first] == [(1, b'{"id": "a"}'), (3, b'{"id": "b"}')]
    assert {(r.topic, r.partition, r.key, r.timestamp_ms) for r in first} == {(str(path.resolve()), 0, None, None)}
    second = src.poll(0)
    assert [r.offset for r in second] == [5, 6] and src.lag() == 0
    assert src.poll(0) == []
    t0 = time.monotonic()
    assert src.poll(200) == [] and time.monotonic() - t0 >= 0.15   # the end of the file waits, never spins
    src.close()
    src.close()                                             # idempotent


def test_commit_moves_forward_only_and_rewind_rereads(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [f'{{"id": "{i}"}}'.encode() for i in range(5)])
    src = FileSource(path, topic="recorded")
    src.start()
    batch = src.poll(0)
    assert src.commit([]) == {}
    assert src.commit(batch[:2]) == {("recorded", 0): 3}
    assert src.commit(batch[:1]) == {}                      # never backwards
    src.rewind(batch[2:])                                   # lines 3.. could not be stored: read them again
    assert [r.offset for r in src.poll(0)] == [3, 4, 5]
    assert src.commit(batch) == {("recorded", 0): 6}


def test_missing_file_is_a_source_error_naming_it_and_ping_follows_the_file(tmp_path):
    path = tmp_path / "gone.jsonl"
    with pytest.raises(SourceError, match=r"file read \(.*gone.jsonl\) failed: No such file or directory"):
        FileSource(path).start()
    write_lines(path, [b'{"id": "a"}'])
    src = FileSource(path)
    src.start()
    assert src.ping()
    path.unlink()
    assert not src.ping()
    assert [r.value for r in src.poll(0)] == [b'{"id": "a"}']   # what was read is still handed out


def test_sources_are_chosen_by_name_from_config(tmp_path):
    assert SOURCES["file"] == "sentinel.sources.file:FileSource"
    cfg = load_config(example_config(tmp_path, ingest={"source": "file", "file": "traffic.jsonl"}))
    src = build_source(cfg)
    assert isinstance(src, FileSource) and src.path == tmp_path / "traffic.jsonl"
    # the default: kafka-python, its consumer in a process of its own; or in the daemon's
    assert type(build_source(load_config(example_config(tmp_path)))).__name__ == "ProcessSource"
    in_process = {"bootstrap_servers": ["127.0.0.1:1"], "topic": "traffic", "consumer_process": False}
    assert type(build_source(load_config(example_config(tmp_path, kafka=in_process)))).__name__ == "KafkaSource"
    with pytest.raises(ConfigError, match=r"ingest.source: source 'nats': unknown; built-in sources are: file, kafka"):
        build_source(load_config(example_config(tmp_path, ingest={"source": "nats"})))
    with pytest.raises(ConfigError, match="ingest: .*needs ingest.file"):
        load_config(example_config(tmp_path, ingest={"source": "file"}))


def test_the_daemon_ingests_a_file_source_chosen_in_config(tmp_path):
    x, _ = ordinary_traffic(np.random.default_rng(4), 120)
    lines = [json.dumps(m).encode() for m in traffic_lines(x, prefix="f-")]
    lines.insert(10, b"not json")
    path = write_lines(tmp_path / "traffic.jsonl", lines)
    cfg = load_config(example_config(tmp_path, ingest={"source": "file", "file": path.name}))
    d = Daemon(build(cfg, load_models=False), install_signals=False, serve_api=False)
    d.start()
    try:
        assert isinstance(d.source, FileSource)
        deadline = time.monotonic() + 30
        while d.store.count("samples") + d.store.count("quarantine") < 121 and time.monotonic() < deadline:
            d.ingest_once()
        assert (d.store.count("samples"), d.store.count("quarantine")) == (120, 1)
        bad = d.store.quarantined()[0]
        assert (bad["reason"], bad["topic"], bad["offset"]) == ("invalid_json", str(path.resolve()), 11)
        assert d.health.broker_part().ok                      # ping: the file is there
        outcome = d.revalidate("triage")
        assert outcome is not None and outcome.n_samples == 120
        assert outcome.record["samples"]["kind"] == "file"
        assert outcome.record["samples"]["offsets"][f"{path.resolve()}/0"]["count"] == 120
    finally:
        d.shutdown()


def test_revalidate_input_reports_bad_lines_and_records_the_file(tmp_path, capsys):
    x, _ = ordinary_traffic(np.random.default_rng(5), 60)
    lines = [json.dumps(m).encode() for m in traffic_lines(x, prefix="r-")]
    lines[2:2] = [b"", b'{"id": "short", "inputs": [1, 2]}']
    path = write_lines(tmp_path / "in.jsonl", lines)
    cfg = example_config(tmp_path)
    assert main(["revalidate", "--config", str(cfg), "--input", str(path), "--json"]) in (0, 1)
    captured = capsys.readouterr()
    assert f"{path}:4: skipped: " in captured.err and "shape" in captured.err.split(f"{path}:4: skipped: ")[1]
    assert json.loads(captured.out)[0]["n_samples"] == 60
    assert main(["revalidate", "--config", str(cfg), "--input", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: cannot read input file (No such file or directory)" in capsys.readouterr().err
