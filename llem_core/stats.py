"""Statistics users can publish: bootstrap confidence intervals per configuration.

Intervals come from ``scipy.stats.bootstrap`` (BCa by default). Configurations with the
same number of cycles are bootstrapped together in one vectorised call; BCa intervals
that are degenerate (e.g. constant data) fall back to the percentile method and say so.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from llem_core.results import METRIC_COLUMNS

DEFAULT_METRICS = (
    "energy_raw_j", "energy_adjusted_j", "j_per_token_adjusted", "j_per_token_raw",
    "tokens_per_s", "ttft_mean_s", "ttft_p50_s", "ttft_p90_s", "itl_mean_s", "itl_p50_s",
    "itl_p90_s",
)
UNRELIABLE_BELOW = 5


@dataclass(frozen=True)
class CIOptions:
    confidence: float = 0.95
    n_resamples: int = 9999
    method: str = "BCa"
    seed: int = 0


def _bootstrap_rows(data: np.ndarray, opts: CIOptions, method: str) -> tuple[np.ndarray, ...]:
    """CI of the mean for every row of ``data`` (rows x samples), vectorised in chunks.

    Each chunk resamples rows x n_resamples x samples values at once; chunks keep that
    under ~400 MB so 1,000 configurations x 8 metrics fit on a laptop.
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


def mean_ci(samples: list[np.ndarray], opts: CIOptions) -> list[tuple[float, float, str]]:
    """(low, high, method) per sample; NaN with method 'none' when n < 2."""
    out: list[tuple[float, float, str]] = [(np.nan, np.nan, "none")] * len(samples)
    by_n: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.size >= 2:
            by_n[s.size].append(i)
    for idx in by_n.values():
        block = np.stack([samples[i] for i in idx])
        constant = np.all(block == block[:, :1], axis=1)
        low = np.full(len(idx), np.nan)
        high = np.full(len(idx), np.nan)
        methods = np.array([opts.method] * len(idx), dtype=object)
        # A constant sample has a zero-width interval; no resampling can say otherwise.
        low[constant] = high[constant] = block[constant, 0]
        methods[constant] = "constant"
        todo = np.flatnonzero(~constant)
        if todo.size:
            lo, hi = _bootstrap_rows(block[todo], opts, opts.method)
            bad = ~(np.isfinite(lo) & np.isfinite(hi))
            if bad.any() and opts.method.lower() != "percentile":
                plo, phi = _bootstrap_rows(block[todo][bad], opts, "percentile")
                lo[bad], hi[bad] = plo, phi
                methods[todo[bad]] = "percentile"
            low[todo], high[todo] = lo, hi
        for j, i in enumerate(idx):
            out[i] = (float(low[j]), float(high[j]), str(methods[j]))
    return out


def summarise(df: pd.DataFrame, group_by: list[str] | None = None,
              metrics: tuple[str, ...] = DEFAULT_METRICS,
              opts: CIOptions | None = None) -> pd.DataFrame:
    """One row per (group, metric): n, mean, std, median, CI of the mean, method, note."""
    opts = opts or CIOptions()
    group_by = group_by or ["config_name"]
    if df.empty:
        return pd.DataFrame(columns=[*group_by, "metric", "unit", "n", "mean", "std", "median",
                                     "ci_low", "ci_high", "ci_method", "confidence", "note"])
    ok = df[df.get("status", "success") == "success"] if "status" in df else df
    keys: list[tuple] = []
    samples: list[np.ndarray] = []
    for key, g in ok.groupby(group_by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            if metric not in g:
                continue
            values = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float)
            keys.append((*key, metric, int(np.isnan(values).sum())))
            samples.append(values[~np.isnan(values)])
    cis = mean_ci(samples, opts)
    rows = []
    for (*key, metric, missing), s, (lo, hi, method) in zip(keys, samples, cis, strict=True):
        notes = []
        if s.size == 0:
            notes.append("no values (metric not measured)")
        elif s.size < 2:
            notes.append("fewer than 2 cycles: no confidence interval")
        elif s.size < UNRELIABLE_BELOW:
            notes.append(f"only {s.size} cycles: interval unreliable (< {UNRELIABLE_BELOW})")
        if missing and s.size:
            notes.append(f"{missing} missing value(s) left out")
        if method == "percentile":
            notes.append("BCa degenerate: percentile interval")
        rows.append({
            **dict(zip(group_by, key, strict=True)), "metric": metric,
            "unit": METRIC_COLUMNS.get(metric, ""), "n": int(s.size),
            "mean": float(s.mean()) if s.size else np.nan,
            "std": float(s.std(ddof=1)) if s.size > 1 else np.nan,
            "median": float(np.median(s)) if s.size else np.nan,
            "ci_low": lo, "ci_high": hi, "ci_method": method,
            "confidence": opts.confidence, "note": "; ".join(notes) or None,
        })
    return pd.DataFrame(rows)


# -- comparisons against a reference configuration ---------------------------------------
COMPARE_METRICS = ("j_per_token_adjusted", "j_per_token_raw", "energy_adjusted_j",
                   "tokens_per_s", "ttft_p50_s", "itl_p50_s")


def _paired_ci(diffs: list[np.ndarray], stat, opts: CIOptions) -> list[tuple[float, float, str]]:
    """CI of a statistic of paired samples, vectorised per group of equal length."""
    out: list[tuple[float, float, str]] = [(np.nan, np.nan, "none")] * len(diffs)
    by_n: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(diffs):
        if d.shape[-1] >= 2:
            by_n[d.shape[-1]].append(i)
    for idx in by_n.values():
        block = np.stack([diffs[i] for i in idx], axis=1)  # (2, rows, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap((block[0], block[1]), stat, axis=-1, vectorized=True,
                                paired=True, confidence_level=opts.confidence,
                                n_resamples=opts.n_resamples, method="percentile",
                                random_state=np.random.default_rng(opts.seed))
        lo = np.atleast_1d(res.confidence_interval.low)
        hi = np.atleast_1d(res.confidence_interval.high)
        for j, i in enumerate(idx):
            out[i] = (float(lo[j]), float(hi[j]), "percentile (paired by cycle)")
    return out


def compare(df: pd.DataFrame, reference: str | None = None,
            metrics: tuple[str, ...] = COMPARE_METRICS,
            opts: CIOptions | None = None) -> pd.DataFrame:
    """Each configuration vs the reference: paired (by cycle) difference and ratio of means.

    Pairing by cycle is valid because interleaved cycles expose both configurations to
    the same drift. ``excludes_zero`` flags a difference whose CI does not contain 0.
    """
    opts = opts or CIOptions()
    ok = df[df["status"] == "success"] if "status" in df else df
    if ok.empty:
        return pd.DataFrame()
    names = list(dict.fromkeys(ok.sort_values("position")["config_name"])) \
        if "position" in ok else list(dict.fromkeys(ok["config_name"]))
    reference = reference or names[0]
    if reference not in names:
        raise ValueError(f"reference configuration {reference!r} not in the results "
                         f"({', '.join(names)})")
    ref = ok[ok["config_name"] == reference].set_index("cycle")
    keys, a_list, b_list = [], [], []
    for name in names:
        if name == reference:
            continue
        cur = ok[ok["config_name"] == name].set_index("cycle")
        for metric in metrics:
            if metric not in ok:
                continue
            joined = pd.concat([cur[metric], ref[metric]], axis=1, keys=["x", "r"]).dropna()
            keys.append((name, metric, len(joined)))
            a_list.append(joined["x"].to_numpy(float))
            b_list.append(joined["r"].to_numpy(float))
    pairs = [np.stack([a, b]) for a, b in zip(a_list, b_list, strict=True)]
    diff_ci = _paired_ci(pairs, lambda x, r, axis: np.mean(x - r, axis=axis), opts)
    ratio_ci = _paired_ci(pairs, lambda x, r, axis: np.mean(x, axis=axis)
                          / np.mean(r, axis=axis), opts)
    rows = []
    for (name, metric, n), a, b, dci, rci in zip(keys, a_list, b_list, diff_ci, ratio_ci,
                                                 strict=True):
        diff = float(np.mean(a - b)) if n else np.nan
        rows.append({
            "config_name": name, "reference": reference, "metric": metric, "n_pairs": n,
            "diff_mean": diff, "diff_ci_low": dci[0], "diff_ci_high": dci[1],
            "ratio": float(np.mean(a) / np.mean(b)) if n and np.mean(b) else np.nan,
            "ratio_ci_low": rci[0], "ratio_ci_high": rci[1],
            "excludes_zero": bool(n >= 2 and (dci[0] > 0 or dci[1] < 0)),
            "note": None if n >= 2 else "fewer than 2 paired cycles: no interval",
        })
    return pd.DataFrame(rows)


def drift(df: pd.DataFrame, metrics: tuple[str, ...] = ("energy_raw_j", "tokens_per_s"),
          alpha: float = 0.05) -> pd.DataFrame:
    """Per configuration: Spearman correlation of each metric with the cycle index.

    A significant trend means the machine drifted (warming up, throttling, a noisy
    neighbour) during the campaign; ``drifted`` flags p < alpha.
    """
    ok = df[df["status"] == "success"] if "status" in df else df
    rows = []
    for name, g in ok.groupby("config_name", sort=False):
        for metric in metrics:
            if metric not in g:
                continue
            sub = g[["cycle", metric]].dropna()
            if len(sub) < 3 or sub[metric].nunique() < 2:
                rows.append({"config_name": name, "metric": metric, "n": len(sub),
                             "spearman_rho": np.nan, "p_value": np.nan, "drifted": False,
                             "note": "fewer than 3 cycles or constant: no trend test"})
                continue
            rho, p = sps.spearmanr(sub["cycle"], sub[metric])
            rows.append({"config_name": name, "metric": metric, "n": len(sub),
                         "spearman_rho": float(rho), "p_value": float(p),
                         "drifted": bool(p < alpha), "note": None})
    return pd.DataFrame(rows)


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
