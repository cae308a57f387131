"""Energy per role, from the host's own counters, or a record saying why there is none.

Sources, read when the host exposes them (nothing is installed or required for either):

- Linux RAPL through the powercap sysfs tree (``/sys/class/powercap/intel-rapl:N/energy_uj``, the
  CPU *package* domains, AMD included): a microjoule counter that wraps at
  ``max_energy_range_uj``. Sub-domains (``intel-rapl:N:M``: cores, uncore, dram) are inside their
  package and ``psys`` covers the whole platform, so only ``package-*`` domains are summed.
- NVML's total energy per NVIDIA GPU (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since
  the driver loaded, Volta and newer), through ``pynvml`` (``nvidia-ml-py``) when it is importable.

Why blocks and not the interleaved calls of :mod:`sentinel.perf.timing`: a package counter sees the
whole socket and updates about every millisecond, so single calls of microseconds cannot be told
apart. Each role instead runs alone for a block of calls between two counter reads; blocks
alternate A B B A so both roles meet the same drift, and an idle block (a sleep) of the same length
is read too. What is stored is *measured*: the package (and GPU) energy spent while a role's blocks
ran, divided by the rows it inferred, gross (idle power and other tenants included; ``idle_watts``
says how much of it the machine draws doing nothing). Nothing is estimated: where no counter can be
read, or a counter did not move, the record is ``{"status": "unavailable", "reason": ...}``.

The powercap root and the NVML module are passed in (as prometheus_client's
``ProcessCollector(proc=...)`` takes its /proc), so tests hand in a fake tree.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_DIR = re.compile(r"^intel-rapl:\d+$")
UNIT = "joules per 1000 inferences"


class Meter(Protocol):
    """One energy counter: ``read()`` a raw value, ``joules(before, after)`` the energy between two
    reads (wrap-around handled)."""
    name: str

    def read(self) -> int: ...

    def joules(self, before: int, after: int) -> float: ...


@dataclass(frozen=True)
class RaplDomain:
    """A RAPL package domain of the powercap tree."""
    name: str                 # rapl:package-0
    path: Path                # .../intel-rapl:0
    max_range_uj: int

    def read(self) -> int:
        return int((self.path / "energy_uj").read_text(encoding="ascii").strip())

    def joules(self, before: int, after: int) -> float:
        # the counter restarts at 0 after max_energy_range_uj; one wrap per block at most (a
        # package wraps after minutes at full power, a block lasts a fraction of a second)
        delta = after - before if after >= before else after + self.max_range_uj - before
        return delta / 1e6


@dataclass(frozen=True)
class NvmlDevice:
    """An NVIDIA GPU's total energy counter (64-bit millijoules: no wrap in practice)."""
    name: str                 # nvml:0
    handle: Any
    nvml: Any

    def read(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def joules(self, before: int, after: int) -> float:
        return max(0, after - before) / 1e3


def rapl_domains(root: Path | str = POWERCAP) -> tuple[list[RaplDomain], str | None]:
    """The readable package domains under ``root``, or none and why."""
    root = Path(root)
    if not root.is_dir():
        return [], (f"no RAPL: {root} does not exist (not Linux, no intel_rapl driver, or a container "
                    "without /sys/class/powercap)")
    dirs = sorted(p for p in root.iterdir() if _PACKAGE_DIR.match(p.name))
    out, problems = [], []
    for d in dirs:
        try:
            name = (d / "name").read_text(encoding="ascii").strip()
            if not name.startswith("package"):
                continue        # psys: the whole platform, would count the packages twice
            domain = RaplDomain(f"rapl:{name}", d, int((d / "max_energy_range_uj").read_text(encoding="ascii")))
            domain.read()
        except PermissionError:
            problems.append(f"{d / 'energy_uj'} is not readable by this user (root only since Linux 5.10, "
                            "CVE-2020-8694)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{d}: {type(exc).__name__}: {exc}")
            continue
        out.append(domain)
    if out:
        return out, None
    return [], "no RAPL: " + ("; ".join(problems) if problems else f"no package domain under {root}")


def nvml_devices(nvml: Any = None) -> tuple[list[NvmlDevice], str | None]:
    """NVIDIA GPUs whose total-energy counter answers, or none and why. ``nvml`` is the pynvml
    module (imported here when None; it is never a dependency)."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return [], "no NVML: pynvml (nvidia-ml-py) is not installed"
    try:
        nvml.nvmlInit()
        devices = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            d = NvmlDevice(f"nvml:{i}", nvml.nvmlDeviceGetHandleByIndex(i), nvml)
            d.read()            # NVMLError_NotSupported before Volta
            devices.append(d)
    except Exception as exc:    # pynvml raises NVMLError subclasses (no driver, not supported...)
        return [], f"no NVML: {type(exc).__name__}: {str(exc)[:160]}"
    return devices, None if devices else "no NVML: no NVIDIA GPU"


def find_meters(powercap: Path | str = POWERCAP, nvml: Any = None) -> tuple[list[Meter], str]:
    """Every readable counter of the host, and the reasons for the sources that have none."""
    rapl, why_rapl = rapl_domains(powercap)
    gpus, why_nvml = nvml_devices(nvml)
    return [*rapl, *gpus], "; ".join(r for r in (why_rapl, why_nvml) if r)


def unavailable(reason: str) -> dict[str, Any]:
    return {"status": "unavailable", "reason": reason}


def measure_energy(runners: dict[str, Any], batches: Sequence[np.ndarray], *, meters: Sequence[Meter],
                   reason: str = "", seconds: float = 1.0, block_seconds: float = 0.1,
                   clock: Callable[[], float] = time.perf_counter,
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Joules per 1,000 inferences of each runner (``predict_proba`` on ``batches`` in turn),
    about ``seconds`` of blocks per role; or ``unavailable`` with ``reason`` when ``meters`` is
    empty, or when a role's blocks moved no counter (a frozen or virtualised one)."""
    if not meters:
        return unavailable(reason or "no energy counter on this host")
    if seconds <= 0:
        return unavailable("perf.energy_seconds is 0")
    roles = list(runners)
    spent = {role: {"joules": 0.0, "rows": 0, "seconds": 0.0} for role in [*roles, "(idle)"]}

    def infer(role: str) -> Callable[[int], int]:
        def call(k: int) -> int:
            batch = batches[k % len(batches)]
            runners[role].predict_proba(batch)
            return len(batch)
        return call

    def idle_block(_k: int) -> int:
        sleep(block_seconds)
        return 0

    try:
        i = 0
        # rounds until every role has run ``seconds`` (a model slower than a block ends it sooner)
        while i == 0 or min(spent[r]["seconds"] for r in roles) < seconds:
            for role in (roles if i % 2 == 0 else roles[::-1]):
                _block(spent[role], meters, infer(role), block_seconds, clock)
            if i % 4 == 0:      # idle power, for scale: a quarter as many blocks is enough
                _block(spent["(idle)"], meters, idle_block, block_seconds, clock)
            i += 1
    except (OSError, ValueError) as exc:    # a counter that stopped answering mid-way
        return unavailable(f"reading the energy counters failed: {type(exc).__name__}: {exc}")
    idle = spent.pop("(idle)")
    frozen = [r for r in roles if spent[r]["joules"] <= 0]
    if frozen:
        return unavailable(f"the energy counters ({', '.join(m.name for m in meters)}) did not advance while "
                           f"{', '.join(frozen)} ran: not a usable measurement")
    return {"status": "measured", "unit": UNIT, "sources": [m.name for m in meters],
            "batch_size": int(len(batches[0])), "block_seconds": block_seconds, "order": "alternating ABBA blocks",
            "scope": "gross: everything the counted packages/GPUs drew while the role ran",
            "idle_watts": round(idle["joules"] / idle["seconds"], 3) if idle["seconds"] > 0 else None,
            "roles": {r: _per_role(spent[r]) for r in roles}}


def _block(acc: dict[str, Any], meters: Sequence[Meter], call: Callable[[int], int], block_seconds: float,
           clock: Callable[[], float]) -> None:
    """Run ``call(k)`` (it returns the rows it inferred) for k = 0, 1, ... until ``block_seconds``
    pass, between two reads of every meter; add the energy, rows and time to ``acc``."""
    before = [m.read() for m in meters]
    t0 = clock()
    k = rows = 0
    while k == 0 or clock() - t0 < block_seconds:
        rows += call(k)
        k += 1
    elapsed = clock() - t0
    after = [m.read() for m in meters]
    acc["joules"] += sum(m.joules(b, a) for m, b, a in zip(meters, before, after))
    acc["rows"] += rows
    acc["seconds"] += elapsed


def _per_role(acc: dict[str, Any]) -> dict[str, Any]:
    rows = acc["rows"]
    return {"joules_per_1000": round(1000 * acc["joules"] / rows, 6) if rows else None,
            "joules": round(acc["joules"], 6), "inferences": rows, "seconds": round(acc["seconds"], 3),
            "watts": round(acc["joules"] / acc["seconds"], 3) if acc["seconds"] > 0 else None}


def role_energy(runners: dict[str, Any], x: Any, batch_size: int, settings: Any, *,
                powercap: Path | str = POWERCAP, nvml: Any = None, signature: Any = None) -> dict[str, Any]:
    """The perf record's ``energy`` for one run: each role at the serving ``batch_size`` on the
    run's rows ``x`` (a stacked array, or rows batched with ``signature``), ``settings.energy_seconds``
    per role (a ``PerfConfig``; ``energy: false`` turns it off)."""
    from .timing import batches

    if not getattr(settings, "energy", True):
        return unavailable("not measured: perf.energy is false")
    meters, reason = find_meters(powercap, nvml)
    if not meters:
        return unavailable(reason)
    return measure_energy(runners, batches(x, batch_size, 16, signature), meters=meters, reason=reason,
                          seconds=float(getattr(settings, "energy_seconds", 1.0)))
