"""Results store, `llem aggregate` and `llem report` on result files written by the schema."""

from __future__ import annotations

import json

import pandas as pd

from llem_core.cli import main
from llem_core.config import ExperimentConfig
from llem_core.grid import config_hash
from llem_core.latency import Distribution
from llem_core.results import (
    EnergyResult,
    ExperimentResult,
    Metrics,
    Provenance,
    load_results,
    result_path,
    to_frame,
    write_result,
)


def make_result(name: str, batch: int, cycle: int, tps: float, joules: float | None):
    cfg = ExperimentConfig(model="org/m", batch_size=batch, name=name)
    d = Distribution.of([0.01 * batch, 0.012 * batch, 0.011 * batch])
    energy = EnergyResult(source="none") if joules is None else EnergyResult(
        source="nvml_counter", raw_j=joules, baseline_w=50.0, adjusted_j=joules - 100,
        raw_j_per_output_token=joules / 1000, adjusted_j_per_output_token=(joules - 100) / 1000,
        window_s=10.0)
    m = Metrics(requests=8, input_tokens=256, output_tokens=1000, repetitions=1, window_s=10.0,
                output_tokens_per_s=tps, requests_per_s=0.8, ttft_s=d, tpot_s=d, itl_s=d,
                e2e_s=d, peak_memory_bytes=1, peak_memory_source="x", warmup_runs=1)
    p = Provenance(llem_version="0", host="h", platform="p", python="3", libraries={},
                   device="cuda:0", hardware={"gpus": [{"name": "GPU"}]},
                   started_at="2026-01-01T00:00:00", finished_at="2026-01-01T00:00:10")
    return ExperimentResult(campaign="c", run_id="r1", name=name, config_hash=config_hash(cfg),
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
    assert main(["aggregate", str(run), "--json", "--reference", "small",
                 "--resamples", "999"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["config_name"]: r for r in data["table"]}
    assert rows["big"]["n"] == 5
    tps = rows["big"]["tokens_per_s"]
    assert tps["ci_low"] < 403 < tps["ci_high"]
    cmp_ = next(c for c in data["comparison"] if c["config_name"] == "big"
            and c["metric"] == "tokens_per_s")
    assert cmp_["excludes_zero"] and abs(cmp_["diff_mean"] - 300) < 1e-9
    csv = pd.read_csv(run / "summary.csv")
    assert {"config_name", "metric", "ci_low", "ci_high", "ci_method"} <= set(csv.columns)
    assert (run / "results.parquet").exists() and (run / "summary.md").exists()


def test_aggregate_group_by(tmp_path, capsys):
    run = write_run(tmp_path)
    assert main(["aggregate", str(run), "--json", "--group-by", "batch_size",
                 "--resamples", "999"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {str(r["config.batch_size"]) for r in data["table"]} == {"1", "8"}


def test_report_is_self_contained_with_charts(tmp_path, capsys):
    run = write_run(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out), "--resamples", "999"]) == 0
    page = out.read_text()
    assert page.count("<svg") >= 6
    assert "Pareto front" in page and "energy vs throughput" in page
    # nothing is fetched when the page is viewed: no external scripts, styles or images
    import re

    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert "<script" not in page and "<link" not in page
    assert "<td>big</td><td>tokens_per_s</td>" in page


def test_report_without_energy_says_so(tmp_path):
    from llem_core.report import build_report

    page = build_report(write_run(tmp_path, energy=False))
    assert "no energy meter was available" in page
    assert "energy vs throughput" not in page.split("<h2>Charts</h2>")[1].split("<h2>")[0]


def test_aggregate_lists_missing_runs(tmp_path):
    from llem_core.aggregate import aggregate_dir

    run = write_run(tmp_path)
    planned = [{"name": "small", "config_hash": "ffffffffffff", "cycle": 1}]
    digest = aggregate_dir(run, planned)
    assert digest["missing"][0]["name"] == "small"
    assert "Failed or missing runs" in (run / "summary.md").read_text()
