"""`llem history` on synthetic result sets spanning several runs: one point per run with its
interval, provenance changes marked, a real step change flagged, noise and single cycles
never flagged, missing configurations shown as missing, changed configurations kept apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import synthetic_result

from llem_core.analysis.history import WELCH, history
from llem_core.analysis.results import result_path, write_result
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash
from llem_core.cli import main

CFG = {"small": ExperimentConfig(model="org/m", batch_size=1, name="small"),
       "big": ExperimentConfig(model="org/m", batch_size=8, name="big")}


def write_runs(root, plan):
    """plan: list of (run_id, day, torch, {name: [j_per_token per cycle]})."""
    for run_id, day, torch, values in plan:
        for name, series in values.items():
            cfg = CFG[name]
            h = config_hash(cfg)
            for cycle, j in enumerate(series, start=1):
                r = synthetic_result("c", run_id, name, cfg, h, cycle, j_per_token=j,
                                     tokens_per_s=1000 * j, torch=torch,
                                     started_at=f"2026-12-{day:02d}T02:00:00")
                write_result(r, result_path(root, "c", run_id, h, cycle))
    return root / "c"


rng = np.random.default_rng(3)


def noisy(mean, n=5, sd=0.002):
    return list(mean + rng.normal(0, sd, n))


@pytest.fixture
def runs(tmp_path):
    return write_runs(tmp_path, [
        ("r1", 1, "2.13.0", {"small": noisy(0.20), "big": noisy(0.10)}),
        ("r2", 2, "2.13.0", {"small": noisy(0.20), "big": noisy(0.10)}),
        ("r3", 3, "2.14.1", {"small": noisy(0.12)}),  # torch upgrade, big lost
    ])


def test_points_changes_and_flags(runs):
    h = history(runs)
    assert list(h.runs["run_id"]) == ["r1", "r2", "r3"] and list(h.runs["order"]) == [1, 2, 3]
    small = h.points[(h.points["config_name"] == "small")
                     & (h.points["metric"] == "j_per_token_adjusted")]
    assert list(small["order"]) == [1, 2, 3] and set(small["n"]) == {5}
    assert all(small["ci_low"] < small["mean"]) and all(small["mean"] < small["ci_high"])
    big = h.points[(h.points["config_name"] == "big")
                   & (h.points["metric"] == "j_per_token_adjusted")]
    assert list(big["run_id"]) == ["r1", "r2"]  # missing from r3, not made up
    [change] = h.changes.to_dict("records")
    assert change == {"run_before": "r2", "run_after": "r3", "field": "torch",
                      "before": "2.13.0", "after": "2.14.1"}
    flags = h.flags.set_index(["config_name", "metric"])
    step = flags.loc[("small", "j_per_token_adjusted")]
    assert step["flagged"] and step["run"] == "r3" and step["reference"] == "r2"
    assert step["diff_ci_high"] < 0 and step["method"] == WELCH
    assert step["rel_change"] == pytest.approx(-0.4, abs=0.03)
    # big's latest run is r2, compared with r1: noise only
    quiet = flags.loc[("big", "j_per_token_adjusted")]
    assert quiet["run"] == "r2" and not quiet["flagged"]


def test_noise_alone_is_flagged_at_about_the_nominal_rate():
    import pandas as pd

    from llem_core.analysis.history import _flags

    runs = pd.DataFrame({"run_id": ["a", "b"], "order": [1, 2]})
    flagged = 0
    for _ in range(400):
        samples = pd.DataFrame(
            [{"config_hash": "h", "config_name": "s", "run_id": run, "cycle": c + 1,
              "metric": "m", "value": v}
             for run in ("a", "b") for c, v in enumerate(rng.normal(1.0, 0.05, 4))])
        flagged += bool(_flags(samples, runs, None, 0.95)["flagged"].iloc[0])
    assert 0.01 < flagged / 400 < 0.09  # nominal 5 %; a binomial 400-draw band


def test_a_single_cycle_is_never_flagged_and_a_baseline_can_be_chosen(tmp_path):
    root = write_runs(tmp_path, [
        ("r1", 1, "x", {"small": [0.2, 0.21, 0.19]}),
        ("r2", 2, "x", {"small": [0.5]}),
        ("r3", 3, "x", {"small": [0.2, 0.2, 0.21]})])
    h = history(root, metrics=("j_per_token_adjusted",))
    assert not h.flags["flagged"].any()
    vs_r2 = history(root, metrics=("j_per_token_adjusted",), baseline="r2").flags
    assert vs_r2["reference"].iloc[0] == "r2" and not vs_r2["flagged"].iloc[0]
    assert "fewer than 2 cycles" in vs_r2["note"].iloc[0]
    with pytest.raises(ValueError, match="baseline run 'zz'"):
        history(root, baseline="zz")


def test_a_changed_configuration_starts_a_new_series(tmp_path):
    write_runs(tmp_path, [("r1", 1, "x", {"small": [0.2, 0.2]})])
    CFG["small"] = ExperimentConfig(model="org/m", batch_size=1, name="small",
                                    max_output_tokens=128)
    try:
        write_runs(tmp_path, [("r2", 2, "x", {"small": [0.5, 0.5]})])
    finally:
        CFG["small"] = ExperimentConfig(model="org/m", batch_size=1, name="small")
    h = history(tmp_path / "c", metrics=("j_per_token_adjusted",))
    assert h.points["config_hash"].nunique() == 2
    assert h.flags.empty  # two series of one run each: nothing to compare


def test_cli_writes_tables_and_chart(runs, capsys, tmp_path):
    out = tmp_path / "hist"
    assert main(["history", str(runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "torch 2.13.0 -> 2.14.1" in text and "missing" in text
    # three runs are too few for a change point at the stated false-alarm rate (p = 0.006
    # at df = 1); tests/test_history_change_points.py covers real ones
    assert "no change point in any series (3 runs)" in text
    page = (out / "history.html").read_text()
    assert page.count("<svg") >= 2 and "What changed" in page
    assert (out / "history.parquet").exists() and (out / "changes.csv").exists()
    assert main(["history", str(runs), "--json", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in data["runs"]} == {"r1", "r2", "r3"}
    assert main(["history", str(tmp_path / "nope")]) == 1
