"""Robustness: how often each model's decision flips under small seeded perturbations of the
window's own rows, candidate vs baseline. Compression often makes a model more brittle near its
decision boundary before it changes any decision on clean traffic."""
from __future__ import annotations

import numpy as np

from .data import RunData, slices
from .result import CheckResult
from .statistical import Finding, StatisticalCheck, StatisticalParams, Test
from .safety import decisions
from .stats import mcnemar_greater


class RobustnessParams(StatisticalParams):
    noise_scales: list[float] = [0.05, 0.1, 0.2]
    dropout: list[float] = [0.1]
    max_rows: int = 2000
    seed: int = 0


class RobustnessCheck(StatisticalCheck):
    """For each perturbation: Gaussian noise at each of ``params.noise_scales`` (default 0.05,
    0.1, 0.2; times each feature's standard deviation over the window) and feature dropout at
    each of ``params.dropout`` (default 0.1: that share of a row's features set to the window's
    column mean), run both models on the perturbed rows (at most ``params.max_rows``, default
    2,000) and count rows whose decision differs from the model's own clean decision.

    Slices ``noise=0.1`` / ``dropout=0.1`` (and ``noise=0.1,region=eu`` with ``slice_by``).
    Value: candidate flip rate - baseline flip rate; test: exact one-sided McNemar (rows only
    the candidate flips vs only the baseline flips); ``warn``/``fail`` are minimum increases.
    Seeded by the run seed and ``params.seed``, so a replay perturbs identically."""
    type = "robustness"
    LEVELS = (0.02, 0.05)
    Params = RobustnessParams

    def evaluate(self, data: RunData) -> list[CheckResult]:
        if data.n == 0:
            return [CheckResult(self.name, "overall", "insufficient_data", None, 0, "no rows to perturb",
                                self.warn, self.fail)]
        if data.predict is None or data.inputs is None:
            return [CheckResult(self.name, "overall", "error", None, data.n,
                                "robustness needs the models (no predict function was given to the check)")]
        rng = np.random.default_rng([int(data.seed), int(self.params["seed"]), 0x5EB])
        n = min(data.n, int(self.params["max_rows"]))
        rows = np.sort(rng.choice(data.n, size=n, replace=False)) if n < data.n else np.arange(data.n)
        x = data.flat_inputs()[rows].astype(np.float64)
        clean_b, clean_c = decisions(data.baseline[rows]), decisions(data.candidate[rows])
        attrs = [data.attributes[i] for i in rows]
        std, mean = x.std(axis=0), x.mean(axis=0)
        perturbations = [(f"noise={s:g}", lambda s=s: x + rng.standard_normal(x.shape) * std * float(s))
                         for s in self.params["noise_scales"]]
        perturbations += [(f"dropout={p:g}", lambda p=p: np.where(rng.random(x.shape) < float(p), mean, x))
                          for p in self.params["dropout"]]
        findings = []
        for label, make in perturbations:
            xp = make().astype(np.float32).reshape((n, *data.inputs.shape[1:]))
            pb, pc = data.predict(xp)
            fb, fc = decisions(pb) != clean_b, decisions(pc) != clean_c
            for name, sl in slices(attrs, self.params["slice_by"]):
                m = int(sl.size)
                rb, rc = (float(fb[sl].mean()), float(fc[sl].mean())) if m else (None, None)
                only_c, only_b = int((fc[sl] & ~fb[sl]).sum()), int((fb[sl] & ~fc[sl]).sum())
                inc = None if rb is None else rc - rb
                findings.append(Finding(
                    label if name == "overall" else f"{label},{name}", inc, m, "flip-rate increase under perturbation",
                    [Test("flip-rate increase", mcnemar_greater(only_c, only_b), inc or 0.0, self.warn, self.fail)],
                    {"flip_rate": {"baseline": rb, "candidate": rc}, "candidate_only_flips": only_c,
                     "baseline_only_flips": only_b, "rows": m}, primary=name == "overall"))
        return self.decide(findings)
