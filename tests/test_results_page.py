"""The results page's reading of a run folder: aggregate.json from the real aggregation,
plan.json, and every kind of bad file (never an exception, always a stated problem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llem_airflow import web_pages
from llem_airflow.results_view import Campaign, read_summary
from test_results_report import write_run

from llem_core.analysis.aggregate import aggregate_dir
from llem_core.analysis.console_table import number


def planned_for(run: Path, extra: int = 0) -> list[dict]:
    plan = [{"name": json.loads(p.read_text())["name"], "config_hash": p.parent.name,
             "cycle": int(p.stem.split("_")[1])} for p in sorted(run.glob("*/cycle_*.json"))]
    return plan + [{"name": "never-ran", "config_hash": "0" * 12, "cycle": k}
                   for k in range(1, extra + 1)]


def test_counts_and_table_come_from_the_real_aggregate(tmp_path):
    run = write_run(tmp_path)
    digest = aggregate_dir(run, planned=planned_for(run, extra=2))
    s = read_summary(run)
    assert (s.planned, s.measured, s.failed) == (12, 10, 2)
    assert s.aggregated and not s.problems
    rows = {r.config: r for r in s.rows}
    assert set(rows) == {"small", "big"}
    want = {r["config_name"]: r for r in digest["table"]}
    for name in ("small", "big"):
        cell = rows[name].cells["tokens_per_s"]
        assert cell.mean == pytest.approx(want[name]["tokens_per_s"]["mean"])
        assert cell.ci_low < cell.mean < cell.ci_high
        assert rows[name].n == 5
        assert rows[name].cells["j_per_token_adjusted"].mean is not None
    page = web_pages.run_page("c", s)
    assert "planned <b>12</b> · measured <b>10</b> · failed or missing <b>2</b>" in page
    mean = rows["big"].cells["tokens_per_s"]
    assert (f"{number(mean.mean)} [{number(mean.ci_low)}, {number(mean.ci_high)}]"
            in page)
    assert "never-ran (cycle 1)" in page
    # units on every column, latencies in ms, a best mark, charts drawn from the table
    assert "<th>TTFT p50 (ms)</th>" in page and "<th>output throughput (tokens/s)</th>" in page
    ttft = rows["big"].cells["ttft_p50_s"]
    assert number(ttft.mean * 1000) in page
    assert page.count("★") >= 1 and page.count("<svg") >= 4
    assert "Pareto front" in page


def test_not_aggregated_yet_counts_result_files_against_the_plan(tmp_path):
    run = write_run(tmp_path)
    (run / "plan.json").write_text(json.dumps({"runs": planned_for(run, extra=1)}))
    s = read_summary(run)
    assert not s.aggregated and s.planned == 11 and s.result_files == 10
    assert "Not aggregated yet: 10 result file(s) so far of 11 planned" in \
        web_pages.counts_line(s)


def test_plan_and_aggregate_that_disagree_are_reported(tmp_path):
    run = write_run(tmp_path)
    aggregate_dir(run, planned=planned_for(run))
    (run / "plan.json").write_text(json.dumps(planned_for(run, extra=3)))
    assert "plan.json lists 13 runs, aggregate.json 10" in read_summary(run).problems


@pytest.mark.parametrize(("text", "problem"), [
    ("{half", "aggregate.json: unreadable"),
    ("[1, 2]", "aggregate.json: not a JSON object"),
    ('{"missing": "x", "table": []}', "'missing' is not a list"),
    ('{"missing": [], "table": {"a": 1}}', "'table' is not a list"),
    ('{"missing": [], "table": [1, {"n": 2}]}', "2 table row(s) unreadable"),
    ("\xff\xfe", "aggregate.json: unreadable"),
])
def test_bad_aggregate_files_become_problems(tmp_path, text, problem):
    (tmp_path / "aggregate.json").write_bytes(text.encode("latin-1"))
    s = read_summary(tmp_path)
    assert any(problem in p for p in s.problems), s.problems
    page = web_pages.run_page("c", s)  # renders, whatever the file held
    assert "Problems" in page


def test_wrong_typed_numbers_are_not_shown_as_numbers(tmp_path):
    (tmp_path / "aggregate.json").write_text(json.dumps({
        "results": True, "planned": -3, "missing": [],
        "table": [{"config_name": "a", "n": "5",
                   "tokens_per_s": {"mean": "1e9", "ci_low": None, "ci_high": 2},
                   "itl_p50_s": {"mean": 1e400, "ci_low": 1, "ci_high": 2}}]}))
    s = read_summary(tmp_path)
    assert s.measured is None and s.planned is None
    [row] = s.rows
    assert row.n is None
    assert row.cells["tokens_per_s"].mean is None and row.cells["itl_p50_s"].mean is None
    assert "1e+09" not in web_pages.headline_table(s)


def test_index_lists_campaigns_without_runs(tmp_path):
    c = Campaign("empty", "llem_empty", tmp_path)
    page = web_pages.index_page([(c, [], 0)])
    assert "No runs yet" in page and "llem_empty" in page


def test_index_has_a_row_per_run_with_counts_and_a_report_link(tmp_path):
    run = write_run(tmp_path)
    aggregate_dir(run, planned=planned_for(run, extra=1))
    pending = run.parent / "pending"
    pending.mkdir()
    c = Campaign("c", "llem_c", tmp_path)
    page = web_pages.index_page([(c, [read_summary(run), read_summary(pending)], 2)])
    assert ("<tr><td>c</td><td>r1</td><td class='num'>11</td><td class='num'>10</td>"
            "<td class='num'>1</td>") in page
    assert "<td class='num'>0 so far</td><td class='num'>not aggregated yet</td>" in page
    assert '>report</a>' in page and "run_dir=" in page
