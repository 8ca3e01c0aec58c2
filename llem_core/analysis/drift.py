"""Drift: does a configuration's metric trend with the cycle index within one run?

Spearman's rank correlation with the cycle. For n <= 8 cycles the p-value is exact (all
n! orderings of the ranks); above, scipy's asymptotic value. Where no ordering could
reach p < alpha (n = 3: the smallest two-sided p is 1/3; n = 4: 1/12), drift is never
flagged, and the note says so.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from llem_core.analysis.identity import identify

EXACT_UP_TO = 8


@lru_cache(maxsize=256)
def _null(x_ranks: tuple[float, ...], y_ranks: tuple[float, ...]) -> np.ndarray:
    """Spearman's rho for every pairing of the two rank vectors (n! values)."""
    x = np.asarray(x_ranks) - np.mean(x_ranks)
    perms = np.array(list(itertools.permutations(y_ranks)))
    y = perms - perms.mean(axis=1, keepdims=True)
    return (y @ x) / np.sqrt((y ** 2).sum(axis=1) * (x ** 2).sum())


def spearman_exact(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(rho, exact two-sided p, smallest attainable p) by enumerating all pairings."""
    xr, yr = sps.rankdata(x), sps.rankdata(y)
    null = _null(tuple(xr), tuple(sorted(yr)))
    rho = float(np.corrcoef(xr, yr)[0, 1])
    tol = 1e-9

    def p_of(t: float) -> float:
        return min(1.0, 2 * min(np.mean(null >= t - tol), np.mean(null <= t + tol)))

    return rho, p_of(rho), min(p_of(float(null.max())), p_of(float(null.min())))


def _trend(sub: pd.DataFrame, metric: str, alpha: float) -> dict:
    n = len(sub)
    if n < 3 or sub[metric].nunique() < 2:
        return {"n": n, "note": "fewer than 3 cycles or constant: no trend test"}
    if sub["cycle"].nunique() < n:  # repeated cycle numbers: no order to correlate with
        return {"n": n, "note": "repeated cycle numbers (results of several runs?): "
                "no trend test"}
    x, y = sub["cycle"].to_numpy(float), sub[metric].to_numpy(float)
    if n <= EXACT_UP_TO:
        rho, p, min_p = spearman_exact(x, y)
        method = "exact permutation"
    else:
        rho, p = (float(v) for v in sps.spearmanr(x, y))
        min_p, method = 0.0, "asymptotic"
    row = {"n": n, "spearman_rho": rho, "p_value": p, "p_method": method, "min_p": min_p,
           "drifted": bool(p < alpha)}
    if min_p >= alpha:
        row["drifted"] = False
        row["note"] = (f"too few cycles: with {n} cycles p < {alpha:g} is unattainable "
                       f"(smallest possible p = {min_p:.3g}); no trend test")
    return row


def drift(df: pd.DataFrame, metrics: tuple[str, ...] = ("energy_raw_j", "tokens_per_s"),
          alpha: float = 0.05) -> pd.DataFrame:
    """Per configuration and run: Spearman correlation of each metric with the cycle.

    A significant trend means the machine drifted (warming up, throttling, a noisy
    neighbour) during the run; ``drifted`` flags p < alpha where that is attainable.
    """
    ok = identify(df[df["status"] == "success"] if "status" in df else df)
    cols = ["config_label", "config_name", "campaign", "run_id", "metric", "n",
            "spearman_rho", "p_value", "p_method", "min_p", "drifted", "note"]
    rows = []
    for (label, run_id), g in ok.groupby(["config_label", "run_id"], sort=False):
        for metric in metrics:
            if metric not in g:
                continue
            base = {"config_label": label, "config_name": g["config_name"].iloc[0],
                    "campaign": g["campaign"].iloc[0], "run_id": run_id, "metric": metric,
                    "spearman_rho": np.nan, "p_value": np.nan, "p_method": None,
                    "min_p": np.nan, "drifted": False, "note": None}
            sub = g[["cycle", metric]].dropna()
            rows.append({**base, **_trend(sub, metric, alpha)})
    return pd.DataFrame(rows, columns=cols)
