"""Inline SVG charts of the report (matplotlib, Agg): no network, no JavaScript.

Charts label configurations by ``config_label`` and metrics by the metric registry.
Labels come from result files that any experiment can write, so they are text, never
markup: every chart is drawn with matplotlib's mathtext and TeX off (a name such as
``$\frac{a}{$`` would otherwise be parsed as a formula and fail the whole page), and
labels are shortened to :data:`MAX_LABEL` characters.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from llem_core.analysis.metrics import REGISTRY, axis_label, display_unit, label, short_label
from llem_core.analysis.stats import pareto_front

# No <metadata> block (date, creator): a chart is the same bytes for the same data, and the
# page holds only the drawing elements.
SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=SVG_METADATA)
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


MAX_LABEL = 80
# pyplot's figure registry and rcParams are process-wide: the api-server draws reports in
# several threads, and the plain-text setting must hold until each figure is saved.
_DRAWING = threading.RLock()
_F = TypeVar("_F", bound=Callable[..., Any])


@contextmanager
def plain_text() -> Iterator[Any]:
    """pyplot, with every text created (tick labels are made when the figure is saved)
    parsed as plain text; one chart at a time in this process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # svg.fonttype none: text stays <text> (escaped by matplotlib), so a chart is smaller,
    # selectable, and readable by a screen reader or a browser test
    with _DRAWING, plt.rc_context({"text.parse_math": False, "text.usetex": False,
                                   "svg.fonttype": "none"}):
        yield plt


def _plt() -> Any:
    """pyplot (Agg); chart functions run under :func:`drawn_as_text`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def text(value: Any) -> str:
    """A label as plain text of bounded length."""
    s = str(value)
    return s if len(s) <= MAX_LABEL else s[:MAX_LABEL - 1] + "…"


def drawn_as_text(fn: _F) -> _F:
    """Run a chart function (drawing and saving) inside :func:`plain_text`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plain_text():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _err(x: Any) -> np.ndarray:
    """Error-bar lengths: none where no interval; a constant sample's rounding (the mean
    of identical values can differ from them in the last bit) never goes negative."""
    return np.clip(np.nan_to_num(np.array(x, float)), 0.0, None)


def _ci_frame(ci: pd.DataFrame, metric: str) -> pd.DataFrame:
    return ci[ci["metric"] == metric].set_index("config_label")


def _publishable(f: pd.DataFrame) -> pd.Series:
    return f["publishable"].fillna(False).astype(bool) if "publishable" in f \
        else pd.Series(True, index=f.index)


def best_of(ci: pd.DataFrame, metric: str) -> str | None:
    """The publishable configuration with the best estimate of ``metric`` (None if none)."""
    d = _ci_frame(ci, metric).dropna(subset=["mean"])
    d = d[_publishable(d)]
    if d.empty or metric not in REGISTRY:
        return None
    return str(d["mean"].idxmax() if REGISTRY[metric].better == "higher"
               else d["mean"].idxmin())


@drawn_as_text
def scatter_chart(ci: pd.DataFrame, energy_metric: str, other: str, maximise_other: bool,
                  title: str) -> tuple[str | None, list[str]]:
    """Energy against another metric with both intervals; the Pareto front of the
    publishable configurations in red; configurations with fewer than 3 cycles hollow."""
    e, o = _ci_frame(ci, energy_metric), _ci_frame(ci, other)
    pts = pd.DataFrame({"e": e["mean"], "o": o["mean"]}).dropna()
    if pts.empty:
        return None, []
    # A headline needs at least 3 cycles: n = 2 points are drawn but never on the front.
    ok = pd.concat([_publishable(e), _publishable(o)], axis=1).reindex(pts.index)
    publishable = pts.index[ok.fillna(False).astype(bool).all(axis=1).to_numpy()]
    front = pareto_front(pts.loc[publishable], "e", "o", maximise_other)
    (_, fe), (_, fo) = display_unit(energy_metric), display_unit(other)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in pts.index:
        x, y = pts.loc[name, "o"], pts.loc[name, "e"]
        xerr = [[x - o.loc[name, "ci_low"]], [o.loc[name, "ci_high"] - x]]
        yerr = [[y - e.loc[name, "ci_low"]], [e.loc[name, "ci_high"] - y]]
        on, full = name in front, name in publishable
        color = "#dc2626" if on else "#64748b"
        ax.errorbar(x * fo, y * fe, xerr=_err(xerr) * fo, yerr=_err(yerr) * fe, fmt="o",
                    color=color, mfc=color if full else "white", capsize=3)
        ax.annotate(text(name) + ("" if full else " (n < 3)"), (x * fo, y * fe), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    fp = pts.loc[front].sort_values("o")
    ax.plot(fp["o"] * fo, fp["e"] * fe, "--", color="#dc2626",
            label="Pareto front (configurations with >= 3 cycles)")
    if len(publishable) < len(pts):
        ax.plot([], [], "o", color="#64748b", mfc="white", label="fewer than 3 cycles: "
                "not publishable")
    ax.set_xlabel(axis_label(other))
    ax.set_ylabel(axis_label(energy_metric))
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _svg(fig), front


@drawn_as_text
def bar_chart(ci: pd.DataFrame, metric: str) -> str | None:
    """Each configuration's estimate with its interval; the best publishable one marked,
    the ones with fewer than 3 cycles hatched."""
    d = _ci_frame(ci, metric).dropna(subset=["mean"])
    if d.empty:
        return None
    _, f = display_unit(metric)
    best = best_of(ci, metric)
    full = _publishable(d).to_numpy()
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.7 + 0.35 * len(d)))
    low = _err((d["mean"] - d["ci_low"]).to_numpy(float)) * f
    high = _err((d["ci_high"] - d["mean"]).to_numpy(float)) * f
    names = [("★ " if i == best else "") + text(i) + ("" if ok else " (n < 3)")
             for i, ok in zip(d.index, full, strict=True)]
    bars = ax.barh(names, d["mean"] * f, xerr=[low, high], capsize=3,
                   color=["#16a34a" if i == best else "#3b82f6" for i in d.index])
    for bar, ok in zip(bars, full, strict=True):
        if not ok:
            bar.set_hatch("//")
            bar.set_alpha(0.45)
    ax.invert_yaxis()
    ax.set_xlabel(axis_label(metric))
    estimator = str(d["estimator"].iloc[0]) if "estimator" in d else "estimate"
    ax.set_title(f"{short_label(metric)}: {estimator} with "
                 f"{ci['confidence'].iloc[0]:.0%} CI" + (" (★ best)" if best else ""))
    return _svg(fig)


@drawn_as_text
def drift_figure(df: pd.DataFrame, metric: str) -> Any | None:
    """Each configuration's metric over cycles (one line per run); integer cycle ticks."""
    if metric not in df or df[metric].dropna().empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    runs = df["run_id"].nunique()
    for (name, run_id), g in df.groupby(["config_label", "run_id"], sort=False):
        g = g.sort_values("cycle")
        ax.plot(g["cycle"], g[metric], marker="o",
                label=text(f"{name} ({run_id})" if runs > 1 else name))
    ax.set_xlabel("cycle")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label(metric))
    ax.set_title(f"{label(metric)} over cycles (drift)")
    ax.legend(fontsize=7)
    return fig


@drawn_as_text
def drift_chart(df: pd.DataFrame, metric: str) -> str | None:
    fig = drift_figure(df, metric)
    return None if fig is None else _svg(fig)


@drawn_as_text
def distribution_chart(per_request: dict[str, dict[str, list[float]]], key: str,
                       label: str) -> str | None:
    data = {n: [v for v in d.get(key, []) if v is not None] for n, d in per_request.items()}
    data = {n: v for n, v in data.items() if v}
    if not data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.4 * len(data)))
    ax.boxplot([np.asarray(v) * 1e3 for v in data.values()], orientation="horizontal",
               tick_labels=[text(n) for n in data])
    ax.set_xlabel(f"{label} (ms)")
    ax.set_title(f"{label} distribution per configuration (all requests)")
    return _svg(fig)
