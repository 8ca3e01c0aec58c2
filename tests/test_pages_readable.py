"""The run and index pages as users read them: units and ms, the best configuration
marked, n < 3 marked not publishable on every surface, why energy is missing, negative
idle-adjusted energy as a caveat, new change points, and a link back to the DAG run."""

from __future__ import annotations

import json
import re

from llem_airflow import web_pages
from llem_airflow.results_view import Campaign, read_summary
from synthetic import synthetic_result

from llem_core.analysis.aggregate import aggregate_dir
from llem_core.analysis.results import result_path, write_result
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash
from llem_core.cli import main

RUN = "manual__2026-12-01T10:00:00+00:00"


def write(root, name: str, cycles: list[tuple[float, float | None]], batch: int) -> None:
    cfg = ExperimentConfig(model="org/m", batch_size=batch, name=name)
    h = config_hash(cfg)
    for cycle, (tps, jpt) in enumerate(cycles, start=1):
        r = synthetic_result("c", RUN, name, cfg, h, cycle, tokens_per_s=tps, j_per_token=jpt)
        write_result(r, result_path(root, "c", RUN, h, cycle))


def run_folder(tmp_path):
    write(tmp_path, "fast", [(900.0, 0.30), (910.0, 0.31), (905.0, 0.29)], 8)
    write(tmp_path, "slow", [(300.0, 0.50), (310.0, 0.52), (305.0, 0.51)], 1)
    write(tmp_path, "two", [(5000.0, 0.01), (5100.0, 0.011)], 4)  # best numbers, n = 2
    write(tmp_path, "nometer", [(400.0, None), (410.0, None), (405.0, None)], 2)
    write(tmp_path, "below", [(500.0, -0.2), (510.0, 0.05), (505.0, 0.1)], 16)
    return result_path(tmp_path, "c", RUN, "x", 1).parents[1]


def test_run_page_marks_what_a_reader_needs(tmp_path):
    run = run_folder(tmp_path)
    digest = aggregate_dir(run)
    rows = {r["config_name"]: r for r in digest["table"]}
    assert not rows["two"]["publishable"] and rows["fast"]["publishable"]
    assert "nometer" in digest["energy_missing"]
    page = web_pages.run_page("c", read_summary(run), "llem_c")
    two = re.search(r"<tr class='unpublishable'><td>two</td>.*?</tr>", page)
    assert two and "NOT PUBLISHABLE" in two.group(0) and "★" not in two.group(0)
    fast = re.search(r"<tr class=''><td>fast</td>.*?</tr>", page).group(0)
    assert "★" in fast  # the best publishable throughput, though "two" measured more
    assert "<th>ITL p50 (ms)</th>" in page and "<th>n (cycles)</th>" in page
    assert "no energy:" in page and "negative in 1 of 3 cycles" in page
    href = "/dags/llem_c/runs/manual__2026-12-01T10%3A00%3A00%2B00%3A00"
    assert f'href="{href}"' in page and 'target="_top"' in page
    assert page.count("<svg") >= 4 and "Pareto front" in page


def test_every_surface_says_not_publishable(tmp_path, capsys):
    run = run_folder(tmp_path)
    digest = aggregate_dir(run)
    assert [r["config_name"] for r in digest["table"] if not r["publishable"]] == ["two"]
    assert "| **no** |" in (run / "summary.md").read_text()
    assert main(["aggregate", str(run)]) == 0
    assert "NOT PUBLISHABLE" in capsys.readouterr().out
    from llem_core.analysis.report import build_report

    page = build_report(run)
    row = re.search(r"<tr><td>two</td>.*?</tr>", page).group(0)
    assert "NOT PUBLISHABLE" in row and "★" not in row
    listing = [(Campaign("c", "llem_c", tmp_path), [read_summary(run)], 1)]
    index = web_pages.index_page(listing)
    assert "NOT PUBLISHABLE" in index and "Why energy is missing" in index


def test_new_change_points_are_shown_as_text(tmp_path):
    run = run_folder(tmp_path)
    aggregate_dir(run)
    (run / "change_points.json").write_text(json.dumps({"new": [{
        "config_name": "<img src=x onerror=alert(1)>", "metric": "tokens_per_s",
        "run_id": RUN, "level_before": 100.0, "level_after": 120.0, "rel_change": 0.2,
        "rel_change_ci_low": 0.1, "rel_change_ci_high": 0.3, "p_value": 1e-6,
        "likely_causes": [{"field": "torch", "before": "2.13", "after": "2.14",
                           "where": "at the change"}]}], "all": []}))
    page = web_pages.run_page("c", read_summary(run), "llem_c")
    section = page.split("New change points")[1].split("</ul>")[0]
    assert "+20.0% [+10.0%, +30.0%]" in section and "torch 2.13 -&gt; 2.14" in section
    assert "<img" not in section and "&lt;img src=x" in section
    (run / "change_points.json").write_text(json.dumps({"new": [], "all": []}))
    assert "This run brought no change point" in web_pages.run_page("c", read_summary(run))
