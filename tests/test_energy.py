"""Energy per role (sentinel/perf/energy.py): a fake powercap tree whose counters the fake models
advance by a known amount per row (wrapping), the real tree where this host exposes one, and the
record saying why when it does not."""
import os
import time
from pathlib import Path

import numpy as np
import pytest

from sentinel.config import PerfConfig
from sentinel.perf.energy import POWERCAP, find_meters, measure_energy, nvml_devices, rapl_domains, role_energy
from sentinel.perf.measure import measure_pair


def fake_powercap(root: Path, *, start: int = 0, max_range: int = 10**6) -> Path:
    """A powercap tree like a one-socket Intel host: package-0 with a core sub-domain, and psys."""
    for d, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"), ("intel-rapl:1", "psys")):
        (root / d).mkdir(parents=True)
        (root / d / "name").write_text(name + "\n")
        (root / d / "energy_uj").write_text(f"{start}\n")
        (root / d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


class Drawing:
    """A model that makes the package counter advance ``uj_per_row`` microjoules per row it infers,
    wrapping at the domain's range, the way the hardware counter does."""

    def __init__(self, counter: Path, uj_per_row: int, max_range: int, role: str):
        self.counter, self.uj_per_row, self.max_range = counter, uj_per_row, max_range
        self.path, self.runtime, self.sha256, self.role = __file__, "onnxruntime", role, role

    def predict_proba(self, batch):
        value = int(self.counter.read_text())
        self.counter.write_text(f"{(value + self.uj_per_row * len(batch)) % self.max_range}\n")
        return np.zeros((len(batch), 2))


def test_only_package_domains_are_counted(tmp_path):
    domains, reason = rapl_domains(fake_powercap(tmp_path))
    assert reason is None and [d.name for d in domains] == ["rapl:package-0"]


def test_counter_wrap_is_the_energy_across_the_wrap(tmp_path):
    [d], _ = rapl_domains(fake_powercap(tmp_path, max_range=1000))
    assert d.joules(900, 100) == pytest.approx(200e-6)
    assert d.joules(100, 900) == pytest.approx(800e-6)


class Ticks:
    """A clock that advances 1 ms per reading: every block has the same number of calls."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 0.001
        return self.t


def test_joules_per_1000_inferences_per_role_across_counter_wraps(tmp_path):
    max_range = 1000        # a baseline block draws under 200 uJ; the whole run several ranges
    root = fake_powercap(tmp_path, start=900, max_range=max_range)
    counter = root / "intel-rapl:0" / "energy_uj"
    runners = {"baseline": Drawing(counter, 5, max_range, "baseline"),
               "candidate": Drawing(counter, 2, max_range, "candidate")}
    meters, _ = find_meters(root)
    out = measure_energy(runners, [np.zeros((4, 3))] * 3, meters=meters, seconds=0.2, block_seconds=0.01,
                         clock=Ticks(), sleep=lambda s: None)
    assert out["status"] == "measured" and out["sources"] == ["rapl:package-0"]
    base, cand = out["roles"]["baseline"], out["roles"]["candidate"]
    assert base["inferences"] * 5 > 3 * max_range          # the counter wrapped at least three times
    assert base["joules_per_1000"] == pytest.approx(5e-3) and cand["joules_per_1000"] == pytest.approx(2e-3)
    assert out["idle_watts"] == 0 and out["batch_size"] == 4


def test_a_counter_that_does_not_move_is_unavailable_not_zero(tmp_path):
    class Still:
        def predict_proba(self, batch):
            return np.zeros((len(batch), 2))

    meters, _ = find_meters(fake_powercap(tmp_path))
    out = measure_energy({"baseline": Still(), "candidate": Still()}, [np.zeros((1, 3))], meters=meters,
                         seconds=0.02, block_seconds=0.01)
    assert out["status"] == "unavailable" and "did not advance while baseline, candidate ran" in out["reason"]


def test_no_counters_is_unavailable_with_each_reason(tmp_path):
    out = role_energy({}, np.zeros((4, 3)), 2, PerfConfig(), powercap=tmp_path / "none")
    assert out["status"] == "unavailable" and set(out) == {"status", "reason"}
    assert f"no RAPL: {tmp_path / 'none'} does not exist" in out["reason"] and "no NVML: " in out["reason"]
    empty = tmp_path / "powercap"
    empty.mkdir()
    assert "no package domain under" in rapl_domains(empty)[1]
    assert role_energy({}, np.zeros((4, 3)), 2, PerfConfig(energy=False))["reason"] == "not measured: perf.energy is false"


def test_nvml_total_energy_in_millijoules_and_its_absence():
    class FakeNvml:     # no GPU on these machines: the NVML calls, as pynvml names them
        count = 0

        def nvmlInit(self):
            pass

        def nvmlDeviceGetCount(self):
            return 1

        def nvmlDeviceGetHandleByIndex(self, i):
            return i

        def nvmlDeviceGetTotalEnergyConsumption(self, handle):
            self.count += 1500
            return self.count

    [gpu], reason = nvml_devices(FakeNvml())
    assert reason is None and gpu.name == "nvml:0" and gpu.joules(gpu.read(), gpu.read()) == pytest.approx(1.5)
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert nvml_devices()[1] == "no NVML: pynvml (nvidia-ml-py) is not installed"


def test_the_run_perf_record_carries_energy_per_role(tmp_path):
    max_range = 10**6
    root = fake_powercap(tmp_path)
    counter = root / "intel-rapl:0" / "energy_uj"
    base, cand = Drawing(counter, 7, max_range, "baseline"), Drawing(counter, 3, max_range, "candidate")
    settings = PerfConfig(budget_seconds=0.05, warmup_seconds=0, memory=False, max_calls=50, energy_seconds=0.1)
    m = measure_pair(base, cand, np.zeros((8, 3), np.float32), serving_batch_size=4, settings=settings,
                     powercap=str(root))
    energy = m.to_record()["energy"]
    assert energy["roles"]["baseline"]["joules_per_1000"] == pytest.approx(7e-3)
    assert energy["roles"]["candidate"]["joules_per_1000"] == pytest.approx(3e-3) and energy["batch_size"] == 4
    none = measure_pair(base, cand, np.zeros((8, 3), np.float32), serving_batch_size=4, settings=settings,
                        powercap=str(tmp_path / "absent")).to_record()["energy"]
    assert none["status"] == "unavailable" and "does not exist" in none["reason"]


def test_real_powercap_counters_where_this_host_exposes_them():
    domains, reason = rapl_domains(POWERCAP)
    if not domains:
        print(f"\nSKIPPING real RAPL test: {reason}")
        pytest.skip(reason)

    class Busy:
        def predict_proba(self, batch):
            a = np.random.default_rng(0).random((200, 200))
            for _ in range(5):
                a = a @ a
                a /= np.abs(a).max()
            return np.zeros((len(batch), 2))

    out = measure_energy({"baseline": Busy(), "candidate": Busy()}, [np.zeros((1, 3))], meters=domains,
                         seconds=0.5, block_seconds=0.1)
    assert out["status"] == "measured", out
    assert all(r["joules"] > 0 and r["inferences"] > 0 for r in out["roles"].values())


def test_a_model_slower_than_a_block_does_not_stretch_the_measurement(tmp_path):
    """One call of 0.5 s (by the clock) fills the whole per-role time: one round, not ten."""
    root = fake_powercap(tmp_path)
    counter = root / "intel-rapl:0" / "energy_uj"
    clock = Ticks()

    class Slow(Drawing):
        def predict_proba(self, batch):
            clock.t += 0.5
            return super().predict_proba(batch)

    runners = {"baseline": Slow(counter, 9, 10**6, "baseline"), "candidate": Slow(counter, 1, 10**6, "candidate")}
    out = measure_energy(runners, [np.zeros((2, 3))], meters=find_meters(root)[0], seconds=0.5, block_seconds=0.1,
                         clock=clock, sleep=lambda s: None)
    assert [r["inferences"] for r in out["roles"].values()] == [2, 2]
    assert out["roles"]["baseline"]["joules_per_1000"] == pytest.approx(9e-3)
