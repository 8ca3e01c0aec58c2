"""Statistics users can publish: intervals that cover what they claim, per configuration.

- A metric that cannot be negative (tokens/s, raw energy, raw J/token, latencies: the
  registry's ``positive``): geometric mean of the cycles with a Student-t interval on the
  log scale, transformed back (method ``log-t``). It is exact for lognormal data at every
  n >= 2, is never negative, and matches the log-ratio comparisons below
  (``bench/ci_coverage.py``). Where such a sample holds a zero (a log is undefined) the
  arithmetic mean's t interval is used with its lower bound clipped at 0, said in the
  method.
- A metric that can be negative (idle-adjusted energy): arithmetic mean with a Student-t
  interval (``scipy.stats.ttest_1samp``), exact for normal data at every n >= 2.
- The bootstrap (BCa, percentile) stays available as an option, on the natural scale; it
  under-covers badly at small n (51 % at n = 2).
- Difference to the reference configuration: paired t on per-cycle differences.
- Ratio to the reference: t on per-cycle log ratios, i.e. a ratio of geometric means;
  no ratio interval where a value is zero or negative.
- A constant sample has a zero-width interval (method ``constant``); n < 2 has none.
- Fewer than ``MIN_PUBLISHABLE`` (3) cycles is not a result: at n = 2 a 95 % t interval
  spans about +-9 standard deviations. Such rows are marked ``publishable: false`` and
  never make a finding, a best configuration or a Pareto front.

Every row states its ``n``, ``estimator`` and ``ci_method``; ``std`` is the sample
standard deviation (n - 1) of the cycles. Identity of a configuration is
``(campaign, config_hash)``; comparisons pair by ``(campaign, run_id, cycle)``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from llem_core.analysis import metrics as registry
from llem_core.analysis.drift import drift  # noqa: F401  (public: llem_core.analysis.stats.drift)
from llem_core.analysis.identity import PAIR_KEYS, identify, resolve_reference

UNRELIABLE_BELOW = 5
MIN_PUBLISHABLE = 3
NOT_PUBLISHABLE = (f"not publishable: fewer than {MIN_PUBLISHABLE} cycles (at n = 2 the 95 % "
                   "interval spans about +-9 standard deviations)")
GEOMETRIC = "geometric mean"
ARITHMETIC = "mean"
BOOTSTRAP_METHODS = ("bca", "percentile")
# Kept for callers that import them; both come from the metric registry.
DEFAULT_METRICS = registry.names()
COMPARE_METRICS = registry.compared()


@dataclass(frozen=True)
class CIOptions:
    confidence: float = 0.95
    method: str = "t"  # "t" (default), or a bootstrap: "BCa", "percentile"
    n_resamples: int = 9999
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.method.lower() not in ("t", *BOOTSTRAP_METHODS):
            raise ValueError(f"CI method must be t, BCa or percentile, got {self.method!r}")


def _t_rows(block: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Student-t interval of the mean and the two-sided p-value (mean = 0), per row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant rows are handled by the caller
        res = sps.ttest_1samp(block, 0.0, axis=-1)
        ci = res.confidence_interval(confidence_level=confidence)
    return np.atleast_1d(ci.low), np.atleast_1d(ci.high), np.atleast_1d(res.pvalue)


def _bootstrap_rows(data: np.ndarray, opts: CIOptions, method: str) -> tuple[np.ndarray, ...]:
    """Bootstrap CI of the mean for every row of ``data`` (rows x samples), in chunks.

    Chunks keep the resampling array (rows x n_resamples x samples) under ~400 MB.
    """
    rows_per_chunk = max(1, int(5e7 // (opts.n_resamples * data.shape[1])))
    if data.shape[0] > rows_per_chunk:
        parts = [_bootstrap_rows(data[i:i + rows_per_chunk], opts, method)
                 for i in range(0, data.shape[0], rows_per_chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate rows give NaN, handled by the caller
        res = sps.bootstrap(
            (data,), np.mean, axis=-1, vectorized=True, paired=False,
            confidence_level=opts.confidence, n_resamples=opts.n_resamples,
            method=method, random_state=np.random.default_rng(opts.seed))
    return (np.atleast_1d(res.confidence_interval.low),
            np.atleast_1d(res.confidence_interval.high))


def _interval_block(block: np.ndarray, opts: CIOptions
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, p-value, method) per row of equal-length samples (n >= 2)."""
    rows = block.shape[0]
    low, high, p = np.full(rows, np.nan), np.full(rows, np.nan), np.full(rows, np.nan)
    method = opts.method.lower()
    methods = np.array(["t" if method == "t" else opts.method] * rows, dtype=object)
    # A constant sample has a zero-width interval; no model of the spread says otherwise.
    # "Constant" allows last-bit rounding (e.g. differences of exactly offset values),
    # which would otherwise give a t interval of width 1e-16 and p = 1e-65.
    constant = np.all(np.isclose(block, block[:, :1], rtol=1e-9, atol=0.0), axis=1)
    low[constant] = high[constant] = block[constant].mean(axis=1)
    methods[constant] = "constant"
    todo = np.flatnonzero(~constant)
    if todo.size:
        lo, hi, p[todo] = _t_rows(block[todo], opts.confidence)
        if method in BOOTSTRAP_METHODS:
            lo, hi = _bootstrap_rows(block[todo], opts, method)
            bad = ~(np.isfinite(lo) & np.isfinite(hi))
            if bad.any():  # BCa degenerate: fall back to t and say so
                lo[bad], hi[bad], _ = _t_rows(block[todo][bad], opts.confidence)
                methods[todo[bad]] = "t (bootstrap degenerate)"
        low[todo], high[todo] = lo, hi
    return low, high, p, methods


def mean_ci(samples: list[np.ndarray], opts: CIOptions | None = None
            ) -> list[tuple[float, float, str]]:
    """(low, high, method) of the mean per sample; NaN with method 'none' when n < 2.

    Samples of equal length are computed together in one vectorised call.
    """
    return [(lo, hi, m) for lo, hi, _, m in _intervals(samples, opts or CIOptions())]


def geo_mean_ci(samples: list[np.ndarray], opts: CIOptions | None = None
                ) -> list[tuple[float, float, float, str]]:
    """(geometric mean, low, high, method) per sample of positive values (``log-t``).

    The interval of a positive metric as ``summarise`` computes it.
    """
    opts = opts or CIOptions()
    metric = "tokens_per_s"  # a positive metric: its log-scale branch is the computation
    out = []
    for s, interval in zip(samples, _intervals([np.log(s) for s in samples], opts),
                           strict=True):
        center, lo, hi, _, method = _estimate(metric, s, interval, True)
        out.append((center, lo, hi, method))
    return out


def estimates(metrics: list[str], samples: list[np.ndarray], opts: CIOptions | None = None
              ) -> list[tuple[float, float, float, str, str]]:
    """(estimate, low, high, estimator, method) per sample, as ``summarise`` computes them
    (log-t for metrics that cannot be negative); all samples in one vectorised pass."""
    opts = opts or CIOptions()
    logs = [_on_log_scale(m, s, opts) for m, s in zip(metrics, samples, strict=True)]
    scaled = [np.log(s) if log else s for s, log in zip(samples, logs, strict=True)]
    return [_estimate(m, s, interval, log) for m, s, interval, log
            in zip(metrics, samples, _intervals(scaled, opts), logs, strict=True)]


def _intervals(samples: list[np.ndarray], opts: CIOptions
               ) -> list[tuple[float, float, float, str]]:
    out: list[tuple[float, float, float, str]] = [(np.nan, np.nan, np.nan, "none")] * len(
        samples)
    by_n: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.size >= 2:
            by_n[s.size].append(i)
    for idx in by_n.values():
        low, high, p, methods = _interval_block(np.stack([samples[i] for i in idx]), opts)
        for j, i in enumerate(idx):
            out[i] = (float(low[j]), float(high[j]), float(p[j]), str(methods[j]))
    return out


def _sample_notes(n: int, missing: int) -> list[str]:
    notes = []
    if n == 0:
        notes.append("no values (metric not measured, or too large to summarise)")
    elif n < 2:
        notes.append("too few cycles: fewer than 2, no confidence interval")
    if 0 < n < MIN_PUBLISHABLE:
        notes.append(NOT_PUBLISHABLE)
    elif MIN_PUBLISHABLE <= n < UNRELIABLE_BELOW:
        notes.append(f"only {n} cycles: interval unreliable unless values are near-normal "
                     f"(near-lognormal for a geometric mean) (< {UNRELIABLE_BELOW})")
    if missing and n:
        notes.append(f"{missing} missing value(s) left out")
    return notes


def _negative_note(metric: str, s: np.ndarray) -> str | None:
    """A caveat for an idle-adjusted figure below zero: the baseline exceeded the window."""
    below = int(np.sum(s < 0))
    if not below or registry.positive(metric):
        return None
    return (f"negative in {below} of {s.size} cycles: the idle baseline was above the "
            "measured power, so the idle-adjusted figure is not meaningful there (use the "
            "raw figure)")


def _on_log_scale(metric: str, s: np.ndarray, opts: CIOptions) -> bool:
    return (registry.positive(metric) and opts.method.lower() == "t" and s.size > 0
            and bool(np.all(s > 0)))


def _estimate(metric: str, s: np.ndarray, interval: tuple[float, float, float, str],
              log_scale: bool) -> tuple[float, float, float, str, str]:
    """(estimate, low, high, estimator, method) on the metric's natural scale.

    ``interval`` was computed on the log scale where ``log_scale``; a positive metric's
    interval never reaches below zero.
    """
    lo, hi, _, method = interval
    if not s.size:
        return np.nan, lo, hi, ARITHMETIC, method
    if log_scale:
        center = float(np.exp(np.mean(np.log(s))))
        if method in ("constant", "none"):
            return center, (center if method == "constant" else lo), \
                (center if method == "constant" else hi), GEOMETRIC, method
        return center, float(np.exp(lo)), float(np.exp(hi)), GEOMETRIC, \
            "log-t" if method == "t" else f"{method} (log scale)"
    center = float(s.mean())
    if registry.positive(metric) and np.isfinite(lo) and lo < 0:
        lo, method = 0.0, f"{method}, clipped at 0 (the metric cannot be negative)"
    return center, lo, hi, ARITHMETIC, method


def summarise(df: pd.DataFrame, group_by: list[str] | None = None,
              metrics: tuple[str, ...] | None = None,
              opts: CIOptions | None = None) -> pd.DataFrame:
    """One row per (group, metric): n, estimate and its CI, estimator, method, note.

    ``mean`` is the estimate the interval is for: the geometric mean for a metric that
    cannot be negative (``estimator``), else the arithmetic mean; ``arith_mean`` is always
    the arithmetic mean. ``publishable`` is false below ``MIN_PUBLISHABLE`` cycles.
    The default group is the configuration (``config_label``: one per (campaign,
    config_hash)); its campaign, name and hash are columns too.
    """
    opts = opts or CIOptions()
    metrics = registry.names() if metrics is None else metrics
    default = group_by is None
    group_by = ["config_label"] if default else list(group_by)
    ident = ["campaign", "config_name", "config_hash"] if default else []
    cols = [*group_by, *ident, "metric", "unit", "n", "mean", "estimator", "arith_mean",
            "std", "median", "ci_low", "ci_high", "ci_method", "confidence", "publishable",
            "note"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    ok = identify(df[df["status"] == "success"] if "status" in df else df)
    keys: list[tuple] = []
    samples: list[np.ndarray] = []
    for key, g in ok.groupby(group_by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        first = g.iloc[0]
        for metric in metrics:
            if metric not in g:
                continue
            values = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float)
            s = values[~np.isnan(values)]
            missing = int(np.isnan(values).sum())
            if not np.all(np.isfinite(np.square(s / 2))):  # var() would overflow
                s, missing = np.array([]), missing + s.size
            keys.append((key, tuple(first[c] for c in ident), metric, missing, s))
            samples.append(np.log(s) if _on_log_scale(metric, s, opts) else s)
    rows = []
    for (key, idv, metric, missing, s), interval in zip(keys, _intervals(samples, opts),
                                                        strict=True):
        center, lo, hi, estimator, method = _estimate(
            metric, s, interval, _on_log_scale(metric, s, opts))
        notes = _sample_notes(int(s.size), missing)
        negative = _negative_note(metric, s)
        rows.append({
            **dict(zip(group_by, key, strict=True)), **dict(zip(ident, idv, strict=True)),
            "metric": metric, "unit": registry.units().get(metric, ""), "n": int(s.size),
            "mean": center, "estimator": estimator,
            "arith_mean": float(s.mean()) if s.size else np.nan,
            "std": float(s.std(ddof=1)) if s.size > 1 else np.nan,
            "median": float(np.median(s)) if s.size else np.nan,
            "ci_low": lo, "ci_high": hi, "ci_method": method,
            "confidence": opts.confidence, "publishable": bool(s.size >= MIN_PUBLISHABLE),
            "note": "; ".join([*notes, *([negative] if negative else [])]) or None,
        })
    return _with_none_notes(pd.DataFrame(rows, columns=cols))


def _with_none_notes(df: pd.DataFrame) -> pd.DataFrame:
    """Empty notes are None (not NaN) so every consumer can test them for truth."""
    if "note" in df:
        # object dtype: pandas would infer a string dtype and turn None back into NaN
        df["note"] = pd.Series([n if isinstance(n, str) else None for n in df["note"]],
                               index=df.index, dtype=object)
    return df


# -- comparisons against a reference configuration ---------------------------------------
def _pairs(x: pd.Series, r: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Two aligned columns (index: campaign, run_id, cycle): the values present in both.

    Returns both arrays and how many values of either side had no partner.
    """
    both = x.notna() & r.notna()
    unpaired = int(x.notna().sum() + r.notna().sum() - 2 * both.sum())
    return x[both].to_numpy(float), r[both].to_numpy(float), unpaired


def _wide(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows (campaign, run_id, cycle), one column per configuration label."""
    keys = [*PAIR_KEYS, "config_label"]
    dup = ok.duplicated(keys)
    if dup.any():
        first = ok.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"two results for the same configuration and cycle: {first}")
    values = pd.to_numeric(ok[metric], errors="coerce")
    return values.set_axis(pd.MultiIndex.from_frame(ok[keys])).unstack("config_label")


def _compare_notes(n: int, unpaired: int, ratio_ok: bool) -> list[str]:
    notes = []
    if n < 2:
        notes.append("too few paired cycles (< 2): no interval, not a finding")
    elif n < MIN_PUBLISHABLE:
        notes.append(f"only {n} paired cycles: not publishable, not a finding (a finding "
                     f"needs at least {MIN_PUBLISHABLE})")
    elif n < UNRELIABLE_BELOW:
        notes.append(f"only {n} paired cycles: interval unreliable unless differences are "
                     "near-normal")
    if unpaired:
        notes.append(f"{unpaired} cycle(s) without a partner in the same campaign run "
                     "left out")
    if n and not ratio_ok:
        notes.append("zero or negative values: no ratio")
    return notes


def compare(df: pd.DataFrame, reference: str | None = None,
            metrics: tuple[str, ...] | None = None,
            opts: CIOptions | None = None) -> pd.DataFrame:
    """Each configuration vs the reference, paired by (campaign, run_id, cycle).

    ``diff_*``: mean per-cycle difference with a paired-t interval and p-value.
    ``ratio*``: ratio of geometric means (exp of the mean per-cycle log ratio) with a t
    interval on the log scale. ``finding`` is true only where at least
    ``MIN_PUBLISHABLE`` pairs exist and the difference interval excludes 0.
    ``reference`` is a label, name or config hash; by default the alphabetically first
    configuration label (``reference_rule`` says which rule chose it).
    """
    opts = opts or CIOptions()
    metrics = registry.compared() if metrics is None else metrics
    ok = identify(df[df["status"] == "success"] if "status" in df else df)
    if ok.empty:
        return pd.DataFrame()
    ref, rule = resolve_reference(ok, reference)
    metrics = tuple(m for m in metrics if m in ok)
    wide = {metric: _wide(ok, metric) for metric in metrics}
    keys, diffs, logs = [], [], []
    for label in sorted(set(ok["config_label"]) - {ref}):
        for metric in metrics:
            x, r, unpaired = _pairs(wide[metric][label], wide[metric][ref])
            ratio_ok = bool(len(x)) and bool(np.all(x > 0) and np.all(r > 0))
            keys.append((label, metric, x, r, unpaired, ratio_ok))
            diffs.append(x - r)
            logs.append(np.log(x) - np.log(r) if ratio_ok else np.array([]))
    paired_t = CIOptions(opts.confidence)  # comparisons always use (paired) t
    d_ci, l_ci = _intervals(diffs, paired_t), _intervals(logs, paired_t)
    first = ok.drop_duplicates("config_label").set_index("config_label")
    rows = []
    for (label, metric, x, r, unpaired, ratio_ok), dci, lci in zip(keys, d_ci, l_ci,
                                                                   strict=True):
        n = len(x)
        excludes = bool(n >= 2 and (dci[0] > 0 or dci[1] < 0))
        finding = excludes and n >= MIN_PUBLISHABLE
        rows.append({
            "config_label": label, "config_name": first.loc[label, "config_name"],
            "campaign": first.loc[label, "campaign"], "reference": ref,
            "reference_rule": rule, "metric": metric, "n_pairs": n,
            "diff_mean": float(np.mean(x - r)) if n else np.nan,
            "diff_ci_low": dci[0], "diff_ci_high": dci[1], "p_value": dci[2],
            "ratio": float(np.exp(np.mean(np.log(x) - np.log(r)))) if ratio_ok else np.nan,
            "ratio_ci_low": float(np.exp(lci[0])), "ratio_ci_high": float(np.exp(lci[1])),
            "ci_method": "paired " + dci[3] if n >= 2 else "none",
            "ratio_ci_method": ("t on log ratios" if lci[3] == "t" else lci[3])
            if ratio_ok else "none",
            "confidence": opts.confidence, "excludes_zero": excludes, "finding": finding,
            "publishable": n >= MIN_PUBLISHABLE,
            "better": _better(metric, dci) if finding else None,
            "note": "; ".join(_compare_notes(n, unpaired, ratio_ok)) or None,
        })
    return _with_none_notes(pd.DataFrame(rows))


def _better(metric: str, dci: tuple[float, float, float, str]) -> bool | None:
    """Whether the configuration beats the reference (None: metric has no direction)."""
    m = registry.REGISTRY.get(metric)
    return None if m is None else (m.better == "higher") == (dci[0] > 0)


def pareto_front(points: pd.DataFrame, minimise: str, other: str,
                 maximise_other: bool) -> list[str]:
    """Names (index) of the configurations no other configuration dominates.

    E.g. minimise J/token while maximising tokens/s, or minimising p90 TTFT.
    """
    pts = points[[minimise, other]].dropna()
    front = []
    for name, row in pts.iterrows():
        better_other = (pts[other] >= row[other]) if maximise_other else (pts[other] <= row[other])
        strictly = (pts[minimise] < row[minimise]) | (
            (pts[other] > row[other]) if maximise_other else (pts[other] < row[other]))
        dominated = ((pts[minimise] <= row[minimise]) & better_other & strictly).any()
        if not dominated:
            front.append(str(name))
    return front
