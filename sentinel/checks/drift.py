"""Data drift (the model inputs) and prediction drift (the candidate's output probabilities:
black-box shift detection, the approach that did best in Rabanser et al., "Failing Loudly",
2019) against the reference window. The only module that imports Evidently (lazily: the import
costs 5-7 s and ~290 MB, so only runs that use these checks pay it).

The columns of data drift are the features of tabular inputs and, for text, images and other
tensors, per-row descriptors (:func:`drift_columns`, sentinel.checks.descriptors): never one
test per token position or pixel. Per column the statistical method is chosen and recorded:
``ks`` for numeric columns, ``z`` (two-sample proportions) for two-valued ones, ``chisquare``
for up to ``CATEGORICAL_MAX`` values of a tabular feature (descriptors, which are ordered
quantities, stay ``ks``); ``params.methods`` overrides it per column with any Evidently method name. Evidently
computes each column's score. Where that score is a valid two-sample p-value (``TWO_SAMPLE_P``)
it is used as is; every other score (distances such as wasserstein, psi, jensenshannon, and
Evidently's chisquare, which treats the reference counts as exact and so false-alarms far above
its threshold) is turned into a p-value by permutation: the same score on B random splits of
reference + current (a score that no split reaches gets p = 1/(B+1)). B is at least
2 x tests / false-alarm rate, so the smallest p-value can survive the family correction
(``params.permutations`` raises it).
The effect size judged against ``warn``/``fail`` is the Wasserstein distance in units of the
reference's standard deviation (numeric) or the total variation distance (categorical).
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .data import RunData, slice_rows, slices
from .descriptors import window_descriptors
from .result import CheckResult, decided_by, deciding, worst
from .statistical import Finding, StatisticalCheck, StatisticalParams, Test

CATEGORICAL_MAX = 10
TWO_SAMPLE_P = {"ks", "z", "mannw", "t_test", "cramer_von_mises", "anderson", "es", "fisher_exact"}
P_VALUE_SCORES = TWO_SAMPLE_P | {"chisquare", "g_test", "empirical_mmd"}   # small score = drift


def _evidently() -> Any:
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType
    return get_registered_stattest, ColumnType


def ks_p_value(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's ``ks`` score (``scipy.stats.ks_2samp(ref, cur)[1]``, what its stattest
    calls), on the arrays directly: the same value, without importing Evidently."""
    from scipy.stats import ks_2samp
    return float(ks_2samp(ref, cur)[1])


def z_p_value(ref: np.ndarray, cur: np.ndarray) -> float:
    """Evidently's ``z`` score (two-sample test of proportions, the smallest value against the
    rest), the same arithmetic on the arrays: the same value, without importing Evidently."""
    from scipy.stats import norm
    if np.unique(ref).size == 1 and np.unique(cur).size == 1 and ref[0] == cur[0]:
        return 1.0
    key = np.min(np.concatenate([ref[~np.isnan(ref)], cur[~np.isnan(cur)]]))
    n1, n2 = ref.size, cur.size
    p1, p2 = float(int((ref != key).sum())) / n1, float(int((cur != key).sum())) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


#: methods scored here with Evidently's own formula on numpy arrays (the column test's common case;
#: Evidently, 5-7 s and ~290 MB to import, is imported only for the other methods and the report)
NATIVE_SCORES = {"ks": ks_p_value, "z": z_p_value}


def choose_method(ref: np.ndarray, cur: np.ndarray, ordinal: bool = False) -> tuple[str, str]:
    """(method, column type) for one column, from the number of distinct values it takes;
    ``ordinal`` columns (descriptors such as a count of tokens) are numeric unless two-valued."""
    distinct = np.unique(np.concatenate([ref, cur])).size
    if distinct <= 2:
        return "z", "cat"
    if distinct <= CATEGORICAL_MAX and not ordinal:
        return "chisquare", "cat"
    return "ks", "num"


def effect_size(ref: np.ndarray, cur: np.ndarray, ctype: str) -> float:
    if ctype == "cat":
        keys = np.unique(np.concatenate([ref, cur]))
        pr = np.array([(ref == k).mean() for k in keys])
        pc = np.array([(cur == k).mean() for k in keys])
        return float(0.5 * np.abs(pr - pc).sum())
    sd = ref.std() or np.concatenate([ref, cur]).std()
    w = wasserstein_1d(ref, cur)
    return float(w / sd) if sd > 0 else (0.0 if w == 0 else float("inf"))


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 distance between two samples: the area between their empirical CDFs (what
    scipy.stats.wasserstein_distance computes, several times faster for plain 1-d samples)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def column_test(ref: np.ndarray, cur: np.ndarray, method: str, ctype: str, permutations: int,
                rng: np.random.Generator) -> tuple[float, float, str]:
    """(p-value, Evidently's score, how the p-value was obtained) for one column."""
    if method in NATIVE_SCORES:
        s = NATIVE_SCORES[method](ref, cur)
        return (s if np.isfinite(s) else 1.0), s, method
    import pandas as pd

    get_stattest, column_type = _evidently()
    st = get_stattest(method, column_type.Numerical if ctype == "num" else column_type.Categorical)

    def score(r: np.ndarray, c: np.ndarray) -> float:
        return float(st(pd.Series(r), pd.Series(c), column_type.Numerical if ctype == "num"
                        else column_type.Categorical, None).drift_score)
    s = score(ref, cur)
    if method in TWO_SAMPLE_P:
        return (s if np.isfinite(s) else 1.0), s, method
    pooled = np.concatenate([ref, cur])
    more_extreme = 0
    for _ in range(permutations):
        perm = rng.permutation(pooled)
        sp = score(perm[:ref.size], perm[ref.size:])
        more_extreme += (sp <= s) if method in P_VALUE_SCORES else (sp >= s)
    return (1 + more_extreme) / (permutations + 1), s, f"permutation of {method} ({permutations})"


class DriftParams(StatisticalParams):
    methods: dict[str, str] | None = {}
    permutations: int = 0
    columns: list[str] | None = None
    max_columns: int = 200
    seed: int = 0


class _DriftCheck(StatisticalCheck):
    Params = DriftParams
    LEVELS = (0.1, 0.25)

    def columns(self, data: RunData) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        """(names, current (n, m), reference (r, m), slice_by for this check)"""
        raise NotImplementedError

    def ordinal(self, data: RunData) -> bool:
        """Whether the columns are ordered quantities (tested as numeric with few values too)."""
        return False

    def evaluate(self, data: RunData) -> list[CheckResult]:
        if data.reference is None or data.reference.n == 0:
            return [CheckResult(self.name, "overall", "insufficient_data", None, data.n,
                                "no reference window yet (no accepted run of this pair and no pinned data set)",
                                self.warn, self.fail)]
        names, cur, ref, slice_by = self.columns(data)
        if self.params["columns"]:
            keep = [j for j, c in enumerate(names) if c in set(self.params["columns"])]
            names, cur, ref = [names[j] for j in keep], cur[:, keep], ref[:, keep]
        n_tests = len(names) * sum(1 for _ in slices(data.attributes, slice_by))
        permutations = max(int(self.params["permutations"]), math.ceil(2 * n_tests / self.alpha))
        rng = np.random.default_rng([int(data.seed), int(self.params["seed"]), 0xD71F])
        overrides = dict(self.params["methods"] or {})
        findings = []
        for sname, rows in slices(data.attributes, slice_by):
            ref_rows = slice_rows(data.reference.attributes, sname)
            for j, col in enumerate(names):
                r, c = ref[ref_rows, j].astype(float), cur[rows, j].astype(float)
                r, c = r[np.isfinite(r)], c[np.isfinite(c)]     # a descriptor unknown for a row (NaN)
                label = f"{self.prefix}={col}" if sname == "overall" else f"{self.prefix}={col},{sname}"
                if min(r.size, c.size) < 2:
                    findings.append(Finding(label, None, int(min(r.size, c.size)), f"drift of {col}"))
                    continue
                method, ctype = choose_method(r, c, ordinal=self.ordinal(data))
                method = overrides.get(col, method)
                p, score, how = column_test(r, c, method, ctype, permutations, rng)
                eff = effect_size(r, c, ctype)
                findings.append(Finding(
                    label, eff, int(min(r.size, c.size)),
                    f"drift of {col} ({'W/sd' if ctype == 'num' else 'TVD'})",
                    [Test(f"{method} vs reference", p, eff, self.warn, self.fail)],
                    {"column": col, "method": method, "column_type": ctype, "evidently_score": score,
                     "p_value_from": how, "n_current": int(c.size), "n_reference": int(r.size),
                     "mean": {"reference": float(r.mean()), "current": float(c.mean())}}, primary=sname == "overall"))
        results = self.decide(findings)
        drifted = [r for r in results if r.status in ("warn", "fail")]
        status, decision = worst([r.status for r in results]), deciding(results)
        summary = CheckResult(
            self.name, "overall", status, float(len(drifted)), data.n,
            f"{len(drifted)} of {len(results)} tested columns/slices drifted vs reference "
            f"({data.reference.source.get('kind')}, n={data.reference.n})" +
            (f": {', '.join(r.slice for r in drifted[:5])}" if drifted else "") + decided_by(decision, status),
            None, None,
            {"reference": data.reference.source, "methods": {r.evidence.get("column"): r.evidence.get("method")
                                                              for r in results if r.evidence.get("column")}},
            decision=decision)
        return [summary] + results


def tested_columns(checks: Any, data: RunData) -> list[str]:
    """The columns the drift checks among ``checks`` will test on ``data``, known before they
    run (each check's ``columns`` and ``params.columns``); [] without a reference window."""
    if data.reference is None or not data.reference.n or not data.n:
        return []
    names: list[str] = []
    for check in checks:
        if isinstance(check, _DriftCheck):
            only = set(check.params["columns"] or ())
            names += [c for c in check.columns(data)[0] if not only or c in only]
    return names


def drift_columns(data: RunData) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The columns ``data_drift`` tests, for any RunData with a reference: (names, current
    ``(n, m)``, reference ``(r, m)``). Tabular inputs: one column per feature. Text, images and
    other tensors: per-row descriptors (sentinel.checks.descriptors): tokens and characters,
    per-channel mean/std with brightness and contrast, per-input mean/std/length; only the
    descriptors both windows have. NaN marks a row where a descriptor is unknown. Descriptors
    are made once per RunData and reference (the checks that announce their columns, the
    report's early section and the drift checks all ask); tabular columns, a reshape, are made
    at each call: a float64 copy of both windows held through the checks was 24 MB more at a
    100k run's peak. Callers must not change the arrays."""
    ref = data.reference
    assert ref is not None
    if data.modality == "tabular":
        cur = _flat(data.inputs, data.rows, data.signature, data.n)
        return data.features_for(cur.shape[1]), cur, _flat(ref.inputs, ref.rows, data.signature, ref.n)
    key = ("drift_columns", id(ref))
    got = data.derived.get(key)
    if got is None or got[0] is not ref:
        got = data.derived[key] = (ref, _descriptor_columns(data, ref))
    return got[1]


def _descriptor_columns(data: RunData, ref: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    cur_d = window_descriptors(data, data.modality, data.signature, data.image_layout)
    ref_d = window_descriptors(ref, data.modality, data.signature, data.image_layout)
    names = [k for k in cur_d if k in ref_d]
    return (names, np.column_stack([cur_d[k] for k in names]) if names else np.zeros((data.n, 0)),
            np.column_stack([ref_d[k] for k in names]) if names else np.zeros((ref.n, 0)))


def _flat(inputs: np.ndarray | None, rows: list | None, signature: Any, n: int) -> np.ndarray:
    """Tabular inputs as ``(n, features)`` float64: the stacked array, else the rows' one input."""
    if inputs is None and rows is not None:
        name = signature.names[0] if signature is not None and signature.inputs else next(iter(rows[0]), None) if rows else None
        inputs = np.stack([np.asarray(r[name], dtype=float) for r in rows]) if rows else np.zeros((0, 0))
    if inputs is None:
        raise ValueError("data_drift: the window has neither stacked inputs nor rows")
    arr = np.asarray(inputs, dtype=float)
    return arr.reshape(n, int(np.prod(arr.shape[1:])))


class DataDriftCheck(_DriftCheck):
    """Drift of the model inputs vs the reference window, per column of :func:`drift_columns`:
    each feature of tabular inputs (inputs wider than ``params.max_columns`` are left to
    prediction drift), per-row descriptors of text, images and other tensors (never a test per
    token position or pixel). Slices: ``feature=<name>``."""
    type = "data_drift"
    prefix = "feature"

    def columns(self, data: RunData) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        names, cur, ref = drift_columns(data)
        m = min(len(names), int(self.params["max_columns"]))
        return names[:m], cur[:, :m], ref[:, :m], list(self.params["slice_by"])

    def ordinal(self, data: RunData) -> bool:
        return data.modality != "tabular"     # descriptors: counts, shares, means


class PredictionDriftCheck(_DriftCheck):
    """Black-box shift detection: the candidate's output probability of each class (one column
    for two classes) on this window vs on the reference window, overall and per slice.
    Slices: ``output=p(<class>)`` and ``output=p(<class>),region=eu``."""
    type = "prediction_drift"
    prefix = "output"

    def columns(self, data: RunData) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        k = len(data.classes)
        keep = list(range(k)) if k > 2 or data.output_kind == "multilabel" else [data.classes.index((data.critical_classes or data.classes)[0])]
        names = [f"p({data.classes[i]})" for i in keep]
        return names, data.candidate[:, keep], data.reference.candidate[:, keep], list(self.params["slice_by"])


def evidently_summary_html(reference: dict[str, Any], current: dict[str, Any]) -> str:
    """Evidently's data summary (per-column statistics and distributions, current vs reference)
    with its tests off, as a self-contained HTML string. Evidently's drift metrics are not used:
    their per-column verdicts (a fixed threshold per column, no family-wise control, no minimum
    effect) said "drift detected" where Sentinel's checks passed."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    ref_df, cur_df = pd.DataFrame(reference), pd.DataFrame(current)
    # the Report's tests off (the preset's own switch off fails to render in 0.7.23: a KeyError
    # for a test metric it never computed)
    with _one_distribution_per_column():
        snapshot = Report([DataSummaryPreset(columns=list(ref_df.columns))], include_tests=False).run(cur_df, ref_df)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evidently.html"
        snapshot.save_html(str(path))   # a pathlib.Path silently writes nothing (PITFALLS.md)
        return path.read_text(encoding="utf-8")


@contextlib.contextmanager
def _one_distribution_per_column() -> Iterator[None]:
    """Evidently 0.7's per-column statistics (min, max, mean, std and three quantiles) each build
    the same plotly distribution figure of their column, and the preset shows only the first
    (``ValueStats._render_numerical`` takes MinValue's): seven figures built per column, six
    thrown away, 85% of the section's time. While this is active, each column's figure is built
    once and shared by its statistics (their widgets keep their own titles); the HTML is the
    same. One report at a time: the child process builds one and exits."""
    from evidently.metrics import column_statistics as cs

    built = cs.distribution
    figures: dict[tuple[Any, ...], Any] = {}

    def distribution(title: str, current: Any, reference: Any) -> Any:
        key = (current.data.name, current.type, len(current.data),
               None if reference is None else (reference.data.name, len(reference.data)))
        if key not in figures:
            figures[key] = built(title, current, reference)
            return figures[key]
        return [w.copy(update={"title": title, "id": str(uuid.uuid4())}) for w in figures[key]]

    cs.distribution = distribution
    try:
        yield
    finally:
        cs.distribution = built


def summary_html_child() -> None:
    """Entry of the short-lived process that builds Evidently's HTML for one report
    (sentinel.reports.EvidentlyProcess), so the daemon never holds Evidently (~290 MB): import
    Evidently at once (beside the run that started this process), then read the columns (an
    ``.npz`` of ``names``, ``r<i>``, ``c<i>``) from stdin, write the HTML to stdout. An empty
    stdin (the run needed no section, or the parent died) ends it."""
    import io
    import json
    import sys

    import evidently.presets  # noqa: F401 - warm: the import is most of the cost
    data = sys.stdin.buffer.read()
    if not data:
        return
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        names = json.loads(str(z["names"]))
        ref = {c: z[f"r{i}"] for i, c in enumerate(names)}
        cur = {c: z[f"c{i}"] for i, c in enumerate(names)}
    sys.stdout.buffer.write(evidently_summary_html(ref, cur).encode("utf-8"))
