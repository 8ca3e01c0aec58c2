"""Results store, `llem aggregate` and `llem report` on result files written by the schema."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from llem_core.analysis.results import (
    EnergyResult,
    ExperimentResult,
    Metrics,
    Provenance,
    load_results,
    result_path,
    to_frame,
    write_result,
)
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash
from llem_core.cli import main
from llem_core.runtime.latency import Distribution


def make_result(name: str, batch: int, cycle: int, tps: float, joules: float | None,
                campaign: str = "c", run_id: str = "r1", model: str = "org/m",
                source: str = "nvml_counter"):
    cfg = ExperimentConfig(model=model, batch_size=batch, name=name)
    d = Distribution.of([0.01 * batch, 0.012 * batch, 0.011 * batch])
    energy = EnergyResult(source="none") if joules is None else EnergyResult(
        source=source, raw_j=joules, baseline_w=50.0, adjusted_j=joules - 100,
        raw_j_per_output_token=joules / 1000, adjusted_j_per_output_token=(joules - 100) / 1000,
        window_s=10.0)
    m = Metrics(requests=8, input_tokens=256, output_tokens=1000, repetitions=1, window_s=10.0,
                output_tokens_per_s=tps, requests_per_s=0.8, ttft_s=d, tpot_s=d, itl_s=d,
                e2e_s=d, peak_memory_bytes=1, peak_memory_source="x", warmup_runs=1)
    p = Provenance(llem_version="0", host="h", platform="p", python="3", libraries={},
                   device="cuda:0", hardware={"gpus": [{"name": "GPU"}]},
                   started_at="2026-01-01T00:00:00", finished_at="2026-01-01T00:00:10")
    return ExperimentResult(campaign=campaign, run_id=run_id, name=name,
                            config_hash=config_hash(cfg),
                            cycle=cycle, position=cycle * 2 + (batch > 1), config=cfg,
                            metrics=m, energy=energy, provenance=p)


def write_run(root, energy=True):
    for cycle in range(1, 6):
        for name, batch, tps, j in (("small", 1, 100.0 + cycle, 500.0 + cycle),
                                    ("big", 8, 400.0 + cycle, 300.0 + cycle)):
            r = make_result(name, batch, cycle, tps, j if energy else None)
            write_result(r, result_path(root, "c", "r1", r.config_hash, cycle))
    return root / "c" / "r1"


def test_corrupt_half_written_and_old_files_are_reported(tmp_path):
    run = write_run(tmp_path)
    bad = run / "deadbeef0000" / "cycle_1.json"
    bad.parent.mkdir()
    bad.write_text('{"schema_version": 1, "name": ')
    old = run / "deadbeef0001" / "cycle_1.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"schema_version": 0}))
    (run / "deadbeef0000" / ".cycle_2.json.abc.tmp").write_text("{")
    ok, problems = load_results(run)
    assert len(ok) == 10
    reasons = {p.path.split("/")[-2] + "/" + p.path.split("/")[-1]: p.reason for p in problems}
    assert "corrupt JSON" in reasons["deadbeef0000/cycle_1.json"]
    assert "schema_version 0 is not supported" in reasons["deadbeef0001/cycle_1.json"]
    assert any("half-written" in r for r in reasons.values())


def test_tidy_frame_columns(tmp_path):
    df = to_frame(load_results(write_run(tmp_path))[0])
    assert len(df) == 10
    for col in ("config_name", "config_hash", "cycle", "config.batch_size", "tokens_per_s",
                "j_per_token_adjusted", "energy_source", "gpu_name"):
        assert col in df.columns
    assert set(df["config.batch_size"]) == {1, 8}


def test_aggregate_cli_json_and_files(tmp_path, capsys):
    run = write_run(tmp_path)
    assert main(["aggregate", str(run), "--json", "--reference", "small"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["config_name"]: r for r in data["table"]}
    assert rows["big"]["n"] == 5
    tps = rows["big"]["tokens_per_s"]
    assert tps["ci_low"] < 403 < tps["ci_high"]
    assert tps["ci_method"] == "log-t" and tps["n"] == 5 and tps["note"] is None
    assert tps["estimator"] == "geometric mean" and tps["publishable"]
    cmp_ = next(c for c in data["comparison"] if c["config_name"] == "big"
            and c["metric"] == "tokens_per_s")
    assert cmp_["finding"] and abs(cmp_["diff_mean"] - 300) < 1e-9
    assert cmp_["ci_method"] == "paired constant" and cmp_["n_pairs"] == 5
    assert data["reference"] == {"label": "small", "rule": "compare_to"}
    csv = pd.read_csv(run / "summary.csv")
    assert {"config_label", "config_name", "metric", "n", "ci_low", "ci_high",
            "ci_method", "note"} <= set(csv.columns)
    assert (run / "results.parquet").exists() and (run / "summary.md").exists()


def test_aggregate_group_by(tmp_path, capsys):
    run = write_run(tmp_path)
    assert main(["aggregate", str(run), "--json", "--group-by", "batch_size"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {str(r["config.batch_size"]) for r in data["table"]} == {"1", "8"}


def test_report_is_self_contained_with_charts(tmp_path, capsys):
    run = write_run(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.count("<svg") >= 6
    assert "Pareto front" in page and "energy per token vs throughput" in page
    # nothing is fetched when the page is viewed: no external scripts, styles or images
    import re

    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "<script" not in page and "<link" not in page
    # one row per configuration, metric columns as estimate [low, high] with their unit
    means = page.split("Per-configuration estimates")[1].split("<h2>")[0]
    assert means.count("<td>big</td>") == 1 and means.count("<tr>") == 3
    assert "<th>output throughput (tokens/s)</th>" in means
    assert "<th>TTFT p50 (ms)</th>" in means and "<th>publishable</th>" in means
    assert re.search(r"<td>(★ )?403\.0 \[401\.\d, 405\.\d\]</td>", means), means
    assert "Definitions" in page and "comparable with the ML.ENERGY" in page
    assert "(no plan.json)" in page


def test_report_without_energy_says_so(tmp_path):
    from llem_core.analysis.report import build_report

    page = build_report(write_run(tmp_path, energy=False))
    assert "no energy meter was available" in page
    charts = page.split("<h2>Charts</h2>")[1].split("<h2>")[0]
    assert "energy per token vs throughput" not in charts


def test_aggregate_lists_missing_runs(tmp_path):
    from llem_core.analysis.aggregate import aggregate_dir

    run = write_run(tmp_path)
    planned = [{"name": "small", "config_hash": "ffffffffffff", "cycle": 1}]
    digest = aggregate_dir(run, planned)
    assert digest["missing"][0]["name"] == "small"
    assert "Failed or missing runs" in (run / "summary.md").read_text()


def _summary(data, label, metric="tokens_per_s"):
    return next(r for r in data["table"] if r["config_label"] == label)[metric]


def test_wrong_shape_json_is_a_problem_not_a_crash(tmp_path, capsys):
    run = write_run(tmp_path)
    for i, text in enumerate(("[]", "{}", '"a string"', "42")):
        bad = run / f"deadbeef000{i}" / "cycle_1.json"
        bad.parent.mkdir()
        bad.write_text(text)
    assert main(["aggregate", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    reasons = sorted(p["reason"] for p in data["problems"])
    assert len(reasons) == 4 and data["results"] == 10
    assert any("JSON array" in r for r in reasons) and any("JSON string" in r for r in reasons)
    assert any("no schema_version" in r for r in reasons)
    from llem_core.analysis.report import build_report

    assert "JSON array" in build_report(run)


def test_duplicate_result_is_a_problem_not_a_second_sample(tmp_path, capsys):
    run = write_run(tmp_path)
    r = make_result("big", 8, 1, 401.0, 301.0)
    copy = run / "backup" / r.config_hash / "cycle_1.json"
    write_result(r, copy)
    ok, problems = load_results(run)
    assert len(ok) == 10
    assert [p.path for p in problems] == [str(copy)] and "duplicate of" in problems[0].reason
    assert main(["aggregate", str(run), "--json"]) == 0
    assert _summary(json.loads(capsys.readouterr().out), "big")["n"] == 5


def test_several_runs_with_a_lost_result_pair_by_run_and_cycle(tmp_path, capsys):
    for run_id in ("r1", "r2"):
        for cycle in range(1, 4):
            for name, batch, tps in (("small", 1, 100.0 + cycle), ("big", 8, 400.0 - cycle)):
                if run_id == "r2" and name == "big" and cycle == 2:
                    continue  # this run lost a result
                r = make_result(name, batch, cycle, tps, 500.0, run_id=run_id)
                write_result(r, result_path(tmp_path, "c", run_id, r.config_hash, cycle))
    assert main(["aggregate", str(tmp_path), "--json", "--compare-to", "small"]) == 0
    data = json.loads(capsys.readouterr().out)
    c = next(c for c in data["comparison"] if c["metric"] == "tokens_per_s")
    assert c["n_pairs"] == 5 and "1 cycle(s) without a partner" in c["note"]
    assert _summary(data, "big")["n"] == 5


def test_same_name_in_two_campaigns_is_two_rows(tmp_path, capsys):
    for campaign, tps in (("c1", 100.0), ("c2", 900.0)):
        for cycle in range(1, 4):
            r = make_result("small", 1, cycle, tps + cycle, 500.0, campaign=campaign,
                            model=f"org/{campaign}")
            write_result(r, result_path(tmp_path, campaign, "r1", r.config_hash, cycle))
    assert main(["aggregate", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["config_label"] for r in data["table"]} == {"c1/small", "c2/small"}
    assert _summary(data, "c2/small")["mean"] == pytest.approx(902.0, rel=1e-5)  # geometric
    # different campaigns never pair: no finding from zero pairs
    assert all(not c["finding"] and c["n_pairs"] == 0 for c in data["comparison"])


def test_group_by_two_fields_keeps_every_combination(tmp_path, capsys):
    for model in ("org/a", "org/b"):
        for batch in (1, 8):
            for cycle in range(1, 4):
                r = make_result(f"{model[-1]}-{batch}", batch, cycle, 100.0 * batch + cycle,
                                500.0, model=model)
                write_result(r, result_path(tmp_path, "c", "r1", r.config_hash, cycle))
    assert main(["aggregate", str(tmp_path), "--json", "--group-by", "model,batch_size"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = {(r["config.model"], r["config.batch_size"]) for r in data["table"]}
    assert keys == {("org/a", 1), ("org/a", 8), ("org/b", 1), ("org/b", 8)}
    assert all(r["n"] == 3 for r in data["table"])


def test_plan_json_lists_missing_runs_and_sets_the_reference(tmp_path, capsys):
    run = write_run(tmp_path)
    big = make_result("big", 8, 1, 1.0, 1.0).config_hash
    plan = [{"name": "big", "config_hash": big, "cycle": c, "position": c} for c in range(1, 7)]
    (run / "plan.json").write_text(json.dumps({"runs": plan, "compare_to": "big"}))
    assert main(["aggregate", str(run)]) == 0
    text = capsys.readouterr().out
    assert "missing" in text and "big (cycle 6" in text
    assert "planned 6" in text and "reference: big (compare_to)" in text
    from llem_core.analysis.report import build_report

    page = build_report(run)
    assert "Failed or missing runs" in page and "6 planned · 10 measured · 1 failed" in page
    assert "<code>big</code>" in page


def test_cli_table_carries_caveats_and_no_finding_from_one_pair(tmp_path, capsys):
    for cycle, name in ((1, "small"), (2, "small"), (1, "big")):
        r = make_result(name, 8 if name == "big" else 1, cycle, 100.0 * cycle + len(name),
                        500.0)
        write_result(r, result_path(tmp_path, "c", "r1", r.config_hash, cycle))
    assert main(["aggregate", str(tmp_path), "--compare-to", "small"]) == 0
    text = capsys.readouterr().out
    assert "too few cycles" in text and "(no CI)" in text and "method" in text
    assert "NOT PUBLISHABLE" in text  # n = 1 and n = 2 both
    assert " vs small:" not in text  # one pair is never printed as a finding
    md = (tmp_path / "summary.md").read_text()
    assert "too few cycles" in md and "| log-t |" in md and "## Findings" in md
    assert "| **no** |" in md  # the publishable column


def test_bad_reference_is_an_error(tmp_path, capsys):
    run = write_run(tmp_path)
    assert main(["aggregate", str(run), "--compare-to", "nope"]) == 1
    assert "not in the results" in capsys.readouterr().err


def test_report_escapes_names_and_sources_and_reads_provenance(tmp_path):
    from llem_core.analysis.report import build_report

    for cycle in range(1, 4):
        r = make_result("<script>x</script>", 1, cycle, 100.0 + cycle, 500.0,
                        source="nvml<b>")
        write_result(r, result_path(tmp_path, "c", "r1", r.config_hash, cycle))
    page = build_report(tmp_path)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "nvml<b>" not in page and "nvml&lt;b&gt;" in page
    assert "{'" not in page and "device cuda:0 · GPUs: GPU" in page


def test_drift_chart_has_integer_cycle_ticks(tmp_path):
    from llem_core.analysis.identity import identify
    from llem_core.analysis.report_charts import drift_figure

    df = identify(to_frame(load_results(write_run(tmp_path))[0]))
    fig = drift_figure(df, "tokens_per_s")
    ticks = [t for t in fig.axes[0].get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_metric_registry_is_the_one_vocabulary():
    from llem_core.analysis import metrics
    from llem_core.analysis.results import METRIC_COLUMNS

    assert metrics.units() == METRIC_COLUMNS
    r = make_result("small", 1, 1, 123.0, 500.0)
    row = to_frame([("p", r)]).iloc[0]
    summary = r.summary()
    for key, column in metrics.summary_keys().items():
        assert summary[key] == row[column]  # XCom summary keys map onto table columns
    assert set(metrics.headline()) <= set(metrics.names())
    assert metrics.get("tokens_per_s").better == "higher"


def test_compare_to_parameter_and_plan_file_tolerance(tmp_path):
    from llem_core.analysis.aggregate import aggregate_dir
    from llem_core.analysis.report import build_report, write_report

    run = write_run(tmp_path)
    (run / "plan.json").write_text("[1, 2]")  # wrong shape: a note, never a crash
    digest = aggregate_dir(run, compare_to="big")
    assert digest["reference"] == {"label": "big", "rule": "compare_to"}
    assert digest["planned"] is None and any("unreadable plan" in n for n in digest["notes"])
    (run / "plan.json").write_text(json.dumps({"runs": [], "compare_to": "big"}))
    planned = [{"name": "small", "config_hash": "ffff", "cycle": 1}]
    digest = aggregate_dir(run, planned)  # the operator passes the plan; compare_to is read
    assert digest["reference"]["label"] == "big" and digest["missing"][0]["name"] == "small"
    page = write_report(run, tmp_path / "r.html", compare_to="small").read_text()
    assert "<code>small</code>" in page
    assert "alphabetically first" in build_report(write_run(tmp_path / "other"))


def test_plan_of_one_run_is_not_satisfied_by_another_run(tmp_path):
    from llem_core.analysis.aggregate import aggregate_dir

    for run_id, cycles in (("r1", (1,)), ("r2", (1, 2))):
        for cycle in cycles:
            r = make_result("small", 1, cycle, 100.0 + cycle, 500.0, run_id=run_id)
            write_result(r, result_path(tmp_path, "c", run_id, r.config_hash, cycle))
    h = make_result("small", 1, 1, 1.0, 1.0).config_hash
    for run_id in ("r1", "r2"):
        plan = [{"name": "small", "config_hash": h, "cycle": c} for c in (1, 2)]
        (tmp_path / "c" / run_id / "plan.json").write_text(json.dumps({"runs": plan}))
    digest = aggregate_dir(tmp_path)
    assert digest["planned"] == 4 and digest["measured"] == 3
    assert [(m["name"], m["cycle"]) for m in digest["missing"]] == [("small", 2)]
