"""A campaign's runs as a time series: one point per run and configuration, with its
interval, what changed in the software and hardware between runs, and the change points
of every series over the whole history (``llem_core.analysis.regression``), each with the
provenance changes that line up with it as its likely cause.

Runs are comparable only when they measured the same configuration: a series is keyed
by ``config_hash``, so a changed campaign file (another hash) starts a new series
instead of mixing. Within a run, a point is the mean over its cycles with a Student-t
interval; between runs the cycles are independent samples, so a change is judged with
Welch's unequal-variance t interval of the difference of means (``scipy.stats``),
and only where both runs have at least two cycles (``flags``: the latest run against the
previous one, a comparison, not an alarm: with day-to-day variation it moves often).
Alarms are the change points: found over all runs, with a stated false-alarm rate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from llem_core.analysis import metrics as metric_registry
from llem_core.analysis.regression import (
    CHANGE_CI,
    DEFAULT_MAX_PVALUE,
    DEFAULT_WINDOW,
    METHOD,
    detect_series,
)
from llem_core.analysis.results import ExperimentResult, LoadProblem, load_results
from llem_core.analysis.stats import CIOptions, estimates

HISTORY_METRICS = metric_registry.headline()
# Provenance fields whose change between runs is marked, and where each is read from.
PROVENANCE_FIELDS = ("gpu_name", "gpu_uuid", "driver", "cuda_driver", "torch",
                     "transformers", "vllm", "llem_version", "host")
WELCH = "Welch t (unpaired: runs are independent samples of cycles)"


def provenance_of(r: ExperimentResult) -> dict[str, str | None]:
    """The provenance fields of one result that the history compares between runs."""
    p = r.provenance
    gpus = p.hardware.get("gpus") or []

    def joined(key: str) -> str | None:
        return ", ".join(str(g.get(key)) for g in gpus if g.get(key)) or None

    return {"gpu_name": joined("name"), "gpu_uuid": joined("uuid"),
            "driver": _str(p.hardware.get("driver")),
            "cuda_driver": _str(p.hardware.get("cuda_driver")),
            "torch": p.libraries.get("torch"), "transformers": p.libraries.get("transformers"),
            "vllm": p.libraries.get("vllm"), "llem_version": p.llem_version, "host": p.host}


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _metric(r: ExperimentResult, metric: str) -> float | None:
    return metric_registry.get(metric).value_of(r)


@dataclass
class History:
    """Everything ``llem history`` prints and writes."""

    runs: pd.DataFrame  # run_id, started_at, order, results, configurations
    points: pd.DataFrame  # series (config_hash), config_name, run_id, order, metric, n, ...
    changes: pd.DataFrame  # run_before, run_after, field, before, after
    flags: pd.DataFrame  # config_hash, config_name, metric, run, reference, diff, CI, flagged
    problems: list[LoadProblem] = field(default_factory=list)
    # config_hash, config_name, metric, run_id (first run after), run_before, levels,
    # rel_change and its interval, p_value, likely_causes
    change_points: pd.DataFrame = field(default_factory=pd.DataFrame)
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per cycle value
    window: int = DEFAULT_WINDOW
    max_pvalue: float = DEFAULT_MAX_PVALUE
    confidence: float = 0.95


def _run_table(results: list[ExperimentResult]) -> pd.DataFrame:
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        key = r.run_id or "adhoc"
        row = rows.setdefault(key, {"run_id": key, "started_at": r.provenance.started_at,
                                    "results": 0, "configs": set()})
        row["started_at"] = min(row["started_at"], r.provenance.started_at)
        row["results"] += 1
        row["configs"].add(r.config_hash)
    table = pd.DataFrame([{**v, "configurations": len(v.pop("configs"))}
                          for v in rows.values()])
    if table.empty:
        return pd.DataFrame(columns=["run_id", "started_at", "results", "configurations",
                                     "order"])
    table = table.sort_values(["started_at", "run_id"]).reset_index(drop=True)
    table["order"] = range(1, len(table) + 1)
    return table


def _samples(results: list[ExperimentResult], metrics: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for r in results:
        for m in metrics:
            v = _metric(r, m)
            if v is not None and np.isfinite(v):
                rows.append({"config_hash": r.config_hash, "config_name": r.name,
                             "run_id": r.run_id or "adhoc", "cycle": r.cycle, "metric": m,
                             "value": v})
    return pd.DataFrame(rows, columns=["config_hash", "config_name", "run_id", "cycle",
                                       "metric", "value"])


def _grouped(samples: pd.DataFrame, keys: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of each group of ``samples`` by ``keys``: groups in the order
    of their first row and rows in theirs, as ``groupby(sort=False)`` iterates, without
    a frame per group (12,000 small groups cost seconds that way)."""
    if samples.empty:
        return
    codes = samples.groupby(keys, sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]  # a key that is NaN: no group, as groupby drops it
    for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
        if rows.size:
            yield int(rows[0]), rows


def _points(samples: pd.DataFrame, runs: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """One point per (configuration, run, metric): the estimate of its cycles with its
    interval, as the aggregate computes it (geometric mean and log-t where the metric
    cannot be negative)."""
    order = dict(zip(runs["run_id"], runs["order"], strict=True))
    keys, values, metrics = [], [], []
    col = {k: samples[k].to_numpy() for k in ("config_hash", "config_name", "run_id", "metric")}
    value = samples["value"].to_numpy(float)
    for i, rows in _grouped(samples, ["config_hash", "run_id", "metric"]):
        keys.append((col["config_hash"][i], col["config_name"][i], col["run_id"][i],
                     col["metric"][i]))
        values.append(value[rows])
        metrics.append(col["metric"][i])
    rows = []
    for (h, name, run, metric), v, (center, lo, hi, estimator, method) in zip(
            keys, values, estimates(metrics, values, CIOptions(confidence=confidence)),
            strict=True):
        rows.append({"config_hash": h, "config_name": name, "run_id": run,
                     "order": order[run], "metric": metric, "n": int(v.size),
                     "mean": center, "estimator": estimator, "ci_low": lo, "ci_high": hi,
                     "ci_method": method, "confidence": confidence,
                     "note": None if v.size >= 2 else "one cycle: no interval"})
    out = pd.DataFrame(rows)
    return out.sort_values(["config_name", "metric", "order"]).reset_index(drop=True) \
        if not out.empty else out


def _changes(results: list[ExperimentResult], runs: pd.DataFrame) -> pd.DataFrame:
    per_run: dict[str, dict[str, set[str]]] = {}
    for r in results:
        fields = per_run.setdefault(r.run_id or "adhoc", {})
        for k, v in provenance_of(r).items():
            if v is not None:
                fields.setdefault(k, set()).add(v)
    rows = []
    ordered = list(runs["run_id"])
    for before, after in itertools.pairwise(ordered):
        a, b = per_run.get(before, {}), per_run.get(after, {})
        for f in PROVENANCE_FIELDS:
            if a.get(f, set()) != b.get(f, set()):
                rows.append({"run_before": before, "run_after": after, "field": f,
                             "before": ", ".join(sorted(a.get(f, set()))) or None,
                             "after": ", ".join(sorted(b.get(f, set()))) or None})
    return pd.DataFrame(rows, columns=["run_before", "run_after", "field", "before", "after"])


def _welch(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Difference of means x - y, its Welch interval and p-value."""
    res = sps.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return float(x.mean() - y.mean()), float(ci.low), float(ci.high)


def _flags(samples: pd.DataFrame, runs: pd.DataFrame, baseline: str | None,
           confidence: float) -> pd.DataFrame:
    order = list(runs["run_id"])
    col = {k: samples[k].to_numpy() for k in ("config_hash", "config_name", "run_id", "metric")}
    value = samples["value"].to_numpy(float)
    rows = []
    for i, at in _grouped(samples, ["config_hash", "metric"]):
        h, metric, run_of = col["config_hash"][i], col["metric"][i], col["run_id"][at]
        seen = set(run_of)
        present = [r for r in order if r in seen]
        if len(present) < 2:
            continue
        latest = present[-1]
        ref = baseline if baseline is not None else present[-2]
        if ref not in present or ref == latest:
            continue
        x = value[at][run_of == latest]
        y = value[at][run_of == ref]
        row = {"config_hash": h, "config_name": col["config_name"][i], "metric": metric,
               "run": latest, "reference": ref, "n_run": int(x.size), "n_reference": int(y.size),
               "diff_mean": float(x.mean() - y.mean()), "diff_ci_low": np.nan,
               "diff_ci_high": np.nan, "rel_change": float(x.mean() / y.mean() - 1)
               if y.mean() else np.nan, "method": WELCH, "flagged": False, "note": None}
        if x.size < 2 or y.size < 2:
            row["note"] = "fewer than 2 cycles in a run: no interval, never flagged"
        elif np.all(x == x[0]) and np.all(y == y[0]):
            row["note"] = "constant values: no interval"
        else:
            _, lo, hi = _welch(x, y, confidence)
            row.update(diff_ci_low=lo, diff_ci_high=hi, flagged=bool(lo > 0 or hi < 0))
        rows.append(row)
    return pd.DataFrame(rows)


CHANGE_POINT_COLUMNS = ["config_hash", "config_name", "metric", "unit", "run_id",
                        "run_before", "started_at", "index", "level_before", "level_after",
                        "rel_change", "rel_change_ci_low", "rel_change_ci_high",
                        "confidence", "p_value", "runs_before", "runs_after", "method",
                        "ci_method", "likely_causes"]


def _causes(changes: pd.DataFrame, ordered: list[str], run_before: str,
            run_id: str) -> list[dict[str, Any]]:
    """Provenance changes at the change point (between its last run before and its first
    run after, runs of other configurations included) or one run either side of it."""
    pos = {r: i for i, r in enumerate(ordered)}
    lo, hi = pos[run_before], pos[run_id]
    out = []
    for c in changes.to_dict("records"):
        at = pos.get(c["run_after"])
        if at is None:
            continue
        where = ("at the change" if lo < at <= hi else "one run before the change"
                 if at == lo else "one run after the change" if at == hi + 1 else None)
        if where:
            out.append({"field": c["field"], "before": c["before"], "after": c["after"],
                        "run_after": c["run_after"], "where": where})
    return sorted(out, key=lambda c: c["where"] != "at the change")


def _change_points(samples: pd.DataFrame, runs: pd.DataFrame, changes: pd.DataFrame,
                   confidence: float, window: int, max_pvalue: float) -> pd.DataFrame:
    ordered = list(runs["run_id"])
    started = dict(zip(runs["run_id"], runs["started_at"], strict=True))
    col = {k: samples[k].to_numpy() for k in ("config_hash", "config_name", "run_id", "metric")}
    value = samples["value"].to_numpy(float)
    rows = []
    for i, at in _grouped(samples, ["config_hash", "metric"]):
        h, metric = col["config_hash"][i], col["metric"][i]
        cycles: dict[str, list[float]] = {}
        for r, v in zip(col["run_id"][at], value[at], strict=True):
            cycles.setdefault(r, []).append(v)
        by_run = {r: np.array(v, float) for r, v in cycles.items()}
        present = [r for r in ordered if r in by_run]
        found = detect_series([by_run[r] for r in present],
                              positive=metric_registry.positive(metric), window=window,
                              max_pvalue=max_pvalue, confidence=confidence)
        for c in found:
            run_id, before = present[c.index], present[c.index - 1]
            rows.append({
                "config_hash": h, "config_name": col["config_name"][i], "metric": metric,
                "unit": metric_registry.units().get(metric, ""), "run_id": run_id,
                "run_before": before, "started_at": started[run_id], "index": c.index,
                "level_before": c.level_before, "level_after": c.level_after,
                "rel_change": c.rel_change, "rel_change_ci_low": c.rel_change_ci_low,
                "rel_change_ci_high": c.rel_change_ci_high, "confidence": confidence,
                "p_value": c.pvalue, "runs_before": c.runs_before, "runs_after": c.runs_after,
                "method": METHOD, "ci_method": CHANGE_CI,
                "likely_causes": _causes(changes, ordered, before, run_id)})
    out = pd.DataFrame(rows, columns=CHANGE_POINT_COLUMNS)
    return out.sort_values(["index", "config_name", "metric"]).reset_index(drop=True) \
        if not out.empty else out


def history(campaign_root: str | Path, metrics: tuple[str, ...] = HISTORY_METRICS,
            baseline: str | None = None, confidence: float = 0.95, *,
            trusted: str | Path | None = None, campaign: str | None = None,
            window: int = DEFAULT_WINDOW, max_pvalue: float = DEFAULT_MAX_PVALUE) -> History:
    """The history of one campaign's results folder (``<results_dir>/<campaign>``).

    The folder is read as untrusted input (links below ``trusted``, default the folder
    itself, are not followed). ``campaign``: results of any other campaign found there
    are listed problems (else they make the history refuse the folder).
    """
    loaded, problems = load_results(campaign_root, trusted)
    if campaign is not None:
        problems += [LoadProblem(path=p, reason=f"a result of campaign {r.campaign!r}, not "
                                 f"{campaign!r}: not counted")
                     for p, r in loaded if r.campaign != campaign]
        loaded = [(p, r) for p, r in loaded if r.campaign == campaign]
    results = [r for _, r in loaded]
    campaigns = sorted({str(r.campaign) for r in results})
    if len(campaigns) > 1:  # run ids (scheduled__<date>) and hashes repeat across campaigns
        raise ValueError(f"{campaign_root} holds results of {len(campaigns)} campaigns "
                         f"({', '.join(campaigns[:5])}): give one campaign's folder, "
                         "<results_dir>/<campaign>")
    runs = _run_table(results)
    if baseline is not None and baseline not in set(runs["run_id"]):
        raise ValueError(f"baseline run {baseline!r} is not in {campaign_root} "
                         f"(runs: {', '.join(runs['run_id'])})")
    samples = _samples(results, metrics)
    changes = _changes(results, runs)
    return History(runs=runs, points=_points(samples, runs, confidence), changes=changes,
                   flags=_flags(samples, runs, baseline, confidence), problems=problems,
                   change_points=_change_points(samples, runs, changes, confidence, window,
                                                max_pvalue),
                   samples=samples, window=window, max_pvalue=max_pvalue, confidence=confidence)


CHANGE_KEY = ["config_hash", "metric", "run_id"]


def new_change_points(h: History, run_id: str) -> pd.DataFrame:
    """The change points of ``h`` that its history without run ``run_id`` did not have:
    what that run brought (a change at an earlier run that only it made significant
    counts too)."""
    if h.change_points.empty:
        return h.change_points
    runs = h.runs[h.runs["run_id"] != run_id]
    if len(runs) == len(h.runs):
        return h.change_points.iloc[0:0]
    samples = h.samples[h.samples["run_id"] != run_id]
    before = _change_points(samples, runs, h.changes, h.confidence, h.window, h.max_pvalue)
    if before.empty:
        return h.change_points
    known = set(map(tuple, before[CHANGE_KEY].to_numpy()))
    fresh = [tuple(k) not in known for k in h.change_points[CHANGE_KEY].to_numpy()]
    return h.change_points[fresh]
