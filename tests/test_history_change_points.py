"""Change points over a campaign's whole history: reported at the run where they happened,
kept in every later history, with size, interval and the provenance change behind them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import synthetic_result

from llem_core.analysis.history import history
from llem_core.analysis.regression import detect_series
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash
from llem_core.cli import main

CFG = ExperimentConfig(model="org/m", batch_size=1, name="small")
HASH = config_hash(CFG)


def write_daily(root, levels: list[float], torch_from: int | None = None, seed: int = 0,
                cv: float = 0.03, day_sd: float = 0.015):
    """One run a day of 5 cycles; the run's level moves day to day by day_sd."""
    from llem_core.analysis.results import result_path, write_result

    rng = np.random.default_rng(seed)
    for day, level in enumerate(levels, start=1):
        run_id = f"scheduled__2026-11-{day:02d}"
        torch = "2.14.1" if torch_from is not None and day >= torch_from else "2.13.0"
        run_level = level * np.exp(rng.normal(0, day_sd))
        for cycle in range(1, 6):
            j = run_level * np.exp(rng.normal(0, cv))
            r = synthetic_result("c", run_id, "small", CFG, HASH, cycle, j_per_token=j,
                                 tokens_per_s=100 / j, torch=torch,
                                 started_at=f"2026-11-{day:02d}T02:00:00")
            write_result(r, result_path(root, "c", run_id, HASH, cycle))
    return root / "c"


def test_a_step_is_one_change_point_at_its_run_with_its_cause(tmp_path):
    root = write_daily(tmp_path, [0.2] * 14 + [0.24] * 6, torch_from=15)
    h = history(root, metrics=("j_per_token_raw", "tokens_per_s"))
    cps = h.change_points
    assert set(cps["metric"]) == {"j_per_token_raw", "tokens_per_s"}
    assert set(cps["run_id"]) == {"scheduled__2026-11-15"}
    assert set(cps["run_before"]) == {"scheduled__2026-11-14"}
    energy = cps[cps["metric"] == "j_per_token_raw"].iloc[0]
    true_raw = (0.24 * 8 + 5) / (0.2 * 8 + 5) - 1  # raw J/token includes the idle part
    assert energy["rel_change_ci_low"] < true_raw < energy["rel_change_ci_high"]
    assert energy["rel_change"] > 0 and energy["p_value"] < 1e-3
    assert (energy["runs_before"], energy["runs_after"]) == (14, 6)
    causes = energy["likely_causes"]
    assert causes[0] == {"field": "torch", "before": "2.13.0", "after": "2.14.1",
                         "run_after": "scheduled__2026-11-15", "where": "at the change"}


def test_a_change_stays_where_it_happened_as_runs_are_added(tmp_path):
    levels = [0.2] * 12 + [0.25] * 12
    z = [np.random.default_rng(k).lognormal(np.log(v), 0.03, 5) for k, v in enumerate(levels)]
    seen = {day: [c.index for c in detect_series(z[:day], positive=True)]
            for day in range(15, 25)}
    assert all(seen[day] == [12] for day in seen), seen


def test_noise_alone_gives_no_change_point(tmp_path):
    root = write_daily(tmp_path, [0.2] * 25, seed=4)
    assert history(root, metrics=("j_per_token_raw",)).change_points.empty


def test_json_contract_lists_every_change_point(tmp_path, capsys):
    root = write_daily(tmp_path, [0.2] * 10 + [0.3] * 10 + [0.2] * 10, seed=2)
    assert main(["history", str(root), "--json", "--metric", "j_per_token_raw"]) == 0
    data = json.loads(capsys.readouterr().out)
    cps = data["change_points"]
    assert [c["run_id"] for c in cps] == ["scheduled__2026-11-11", "scheduled__2026-11-21"]
    for c in cps:
        assert {"config_name", "metric", "run_id", "level_before", "level_after",
                "rel_change"} <= set(c)
        assert c["config_name"] == "small" and c["metric"] == "j_per_token_raw"
    assert cps[0]["rel_change"] == pytest.approx((0.3 * 8 + 5) / (0.2 * 8 + 5) - 1, abs=0.03)
    assert cps[1]["rel_change"] < 0
    assert "changes" in data and isinstance(data["changes"], list)  # provenance, as before


def test_adjusted_energy_at_or_below_zero_has_no_relative_change():
    z = [np.array([-0.01, 0.0, 0.01, 0.0, -0.005]) + (0.5 if k >= 10 else 0.0)
         for k in range(20)]
    [c] = detect_series(z, positive=False)
    assert c.index == 10 and c.rel_change is None and c.level_after > c.level_before


def test_history_page_reads_as_text_with_units_dates_and_marks(tmp_path):
    import re

    from llem_core.analysis.history_report import history_html

    root = write_daily(tmp_path, [0.2] * 14 + [0.24] * 6, torch_from=15)
    h = history(root, metrics=("j_per_token_raw", "tokens_per_s", "ttft_p50_s"))
    page = history_html(h, "History of c", dag_id="llem_c")
    visible = re.sub(r"<[^>]+>", " ", page)
    assert "True" not in visible and "False" not in visible
    for raw_id in ("j_per_token_raw", "tokens_per_s", "ttft_p50_s"):
        assert raw_id not in visible
    assert "energy per token, raw (J/token)" in page and "TTFT p50 (ms)" in page
    assert "2026-11-15" in page  # run dates on the x axis
    assert page.count("change +") >= 1  # the change point drawn where it happened
    assert "torch 2.13.0 -&gt; 2.14.1 (at the change)" in page
    assert 'href="/dags/llem_c/runs/scheduled__2026-11-15"' in page
    assert "Change points (2)" in page  # raw J/token and tokens/s, not the latency
