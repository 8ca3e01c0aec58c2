"""The statistics on hostile or odd synthetic result sets (huge values, reused names, groups)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from llem_core.analysis.identity import identify
from llem_core.analysis.results import load_results, result_path, write_result
from llem_core.analysis.stats import drift, summarise
from llem_core.campaign.config import ExperimentConfig
from tests.synthetic import synthetic_result


def _row(campaign: str, name: str, chash: str, cycle: int, value: float) -> dict:
    return {"campaign": campaign, "run_id": "r", "config_name": name, "config_hash": chash,
            "cycle": cycle, "tokens_per_s": value, "energy_raw_j": value,
            "status": "success"}


def test_a_name_holding_a_slash_never_shares_a_label_with_another_configuration():
    # "B/x" in campaign A vs "x" in campaigns B and C: "B/x" was the label of two
    # configurations, which summarise then pooled into one row.
    df = pd.DataFrame([_row("A", "B/x", "h1", 1, 1.0), _row("B", "x", "h2", 1, 2.0),
                       _row("C", "x", "h3", 1, 3.0)])
    labels = identify(df)["config_label"]
    assert labels.nunique() == 3
    ci = summarise(df, metrics=("tokens_per_s",))
    assert len(ci) == 3 and set(ci["n"]) == {1}


def test_drift_is_not_flagged_when_the_cycle_numbers_repeat():
    # The same cycle number five times (e.g. results of several runs without a run id):
    # Spearman's rho is undefined, and the old code reported p = 0 and drifted = True.
    df = pd.DataFrame([_row("A", "a", "h", 1, v) for v in (1.0, 2.0, 3.0, 4.0, 5.0)])
    row = drift(df, metrics=("energy_raw_j",)).iloc[0]
    assert not row["drifted"]
    assert "repeated cycle" in row["note"]


def test_a_result_file_holding_infinity_or_nan_is_a_problem_not_a_sample(tmp_path):
    cfg = ExperimentConfig(model="./m")
    for cycle, bad in ((1, "Infinity"), (2, "NaN")):
        r = synthetic_result("c", "r", "a", cfg, "h", cycle, tokens_per_s=100.0)
        path = result_path(tmp_path, "c", "r", "h", cycle)
        write_result(r, path)
        doc = json.loads(path.read_text())
        doc["metrics"]["output_tokens_per_s"] = 12345.0
        path.write_text(json.dumps(doc).replace("12345.0", bad))
    write_result(synthetic_result("c", "r", "a", cfg, "h", 3), result_path(
        tmp_path, "c", "r", "h", 3))
    ok, problems = load_results(tmp_path)
    assert len(ok) == 1
    assert sorted(p.path.rsplit("/", 1)[1] for p in problems) == ["cycle_1.json",
                                                                  "cycle_2.json"]
    assert all("not a measured value" in p.reason for p in problems)


def test_names_holding_rich_markup_are_printed_not_interpreted(tmp_path, capsys):
    # Config names, paths and reasons are data: "[/x]" in a name made rich raise
    # MarkupError, so `llem aggregate` and `llem history` crashed on such a result set.
    from llem_core.cli import main

    cfg = ExperimentConfig(model="./m")
    for name, chash in (("fast[/x]", "h1"), ("[bold]ref", "h2")):
        for cycle in (1, 2, 3):
            write_result(synthetic_result("c", "r", name, cfg, chash, cycle,
                                          tokens_per_s=100.0 + cycle * (1 + (chash == "h1"))),
                         result_path(tmp_path, "c", "r", chash, cycle))
    (tmp_path / "c" / "r" / "[bold]p").mkdir()
    (tmp_path / "c" / "r" / "[bold]p" / "cycle_1.json").write_text("{")
    assert main(["aggregate", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "fast[/x]" in text and "[bold]ref" in text and "[bold]p/cycle_1.json" in text
    assert main(["history", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "fast[/x]" in text and "[bold]ref" in text


def test_history_refuses_a_folder_of_several_campaigns(tmp_path):
    # Scheduled run ids and config hashes repeat across campaigns: two campaigns' cycles
    # were pooled into one point (n = 4, the mean of two different campaigns).
    from llem_core.analysis.history import history

    cfg = ExperimentConfig(model="./m")
    for campaign, base in (("a", 100.0), ("b", 200.0)):
        for cycle in (1, 2):
            write_result(synthetic_result(campaign, "scheduled__2026", "x", cfg, "h1", cycle,
                                          tokens_per_s=base + cycle),
                         result_path(tmp_path, campaign, "scheduled__2026", "h1", cycle))
    with pytest.raises(ValueError, match="2 campaigns"):
        history(tmp_path, ("tokens_per_s",))
    assert history(tmp_path / "a", ("tokens_per_s",)).points["n"].tolist() == [2]


def test_history_table_keeps_a_reused_name_as_two_series(tmp_path, capsys):
    # One name, two settings (the campaign file changed between runs): the table showed
    # them in one row, as if the series had jumped from 101.5 to 301.5 and back.
    from llem_core.cli import main

    cfg = ExperimentConfig(model="./m")
    for chash, base, run, day in (("h1aaaaaaaa", 100.0, "r1", "01"),
                                  ("h2bbbbbbbb", 300.0, "r2", "02")):
        for cycle in (1, 2):
            write_result(synthetic_result("a", run, "x", cfg, chash, cycle,
                                          tokens_per_s=base + cycle,
                                          started_at=f"2026-01-{day}T00:00:00"),
                         result_path(tmp_path, "a", run, chash, cycle))
    assert main(["history", str(tmp_path), "--metric", "tokens_per_s"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "output throughput" in line]
    assert len(rows) == 2
    assert any("x@h1aaaaaa" in r and "missing" in r for r in rows)
    assert any("x@h2bbbbbb" in r and "missing" in r for r in rows)


def test_group_by_a_field_group_or_an_absent_field_aggregates_instead_of_crashing(tmp_path):
    # `group_by: [decoding]` passes `llem validate`, but the aggregate task then raised
    # KeyError 'config.decoding' after the whole campaign had run (no summary at all);
    # so did an `extra.x` no configuration sets, and a typo in `llem aggregate --group-by`.
    from llem_core.analysis.aggregate import aggregate_dir

    for temp, chash in ((0.0, "h1"), (0.7, "h2")):
        cfg = ExperimentConfig(model="./m", decoding={"temperature": temp})
        for cycle in (1, 2):
            write_result(synthetic_result("c", "r", f"t{temp}", cfg, chash, cycle,
                                          tokens_per_s=100.0 + cycle + 10 * temp),
                         result_path(tmp_path, "c", "r", chash, cycle))
    digest = aggregate_dir(tmp_path, group_by=["decoding"])
    assert "config.decoding.temperature" in digest["group_by"]
    assert len(digest["table"]) == 2
    digest = aggregate_dir(tmp_path, group_by=["extra.x"])
    assert any("group_by extra.x: no result has this field" in n for n in digest["notes"])
    assert len(digest["table"]) == 2  # per configuration, never pooled


@pytest.mark.parametrize("entry", [
    {"name": "a", "config_hash": ["h1"], "cycle": 1},
    {"name": "a", "config_hash": {"x": 1}, "cycle": 1},
    {"name": "a", "config_hash": "h1", "cycle": "1"},
    {"name": None, "config_hash": "h1", "cycle": 1},
])
def test_an_odd_plan_file_is_a_note_not_a_crash_or_a_false_missing_run(tmp_path, entry):
    # The run folder is writable by every experiment: a plan.json entry holding a list
    # as config_hash crashed aggregate (TypeError: unhashable), and a cycle "1" reported
    # a measured run as missing.
    from llem_core.analysis.aggregate import aggregate_dir

    cfg = ExperimentConfig(model="./m")
    for cycle in (1, 2):
        write_result(synthetic_result("c", "r", "a", cfg, "h1", cycle),
                     result_path(tmp_path, "c", "r", "h1", cycle))
    (tmp_path / "c" / "r" / "plan.json").write_text(json.dumps({"runs": [entry]}))
    digest = aggregate_dir(tmp_path)
    assert digest["missing"] == [] and digest["planned"] is None
    assert any("plan.json: unreadable plan" in n for n in digest["notes"])


def test_huge_values_give_no_number_and_valid_json_not_infinity(tmp_path):
    # 1.7e308 tokens/s (finite, so it loads): the sum overflowed, the mean was inf and
    # aggregate.json held `Infinity`, which is not JSON.
    from llem_core.analysis.aggregate import aggregate_dir

    cfg = ExperimentConfig(model="./m")
    for name, chash, v in (("a", "h1", 1.7e308), ("b", "h2", 1.0)):
        for cycle in (1, 2):
            write_result(synthetic_result("c", "r", name, cfg, chash, cycle,
                                          tokens_per_s=v * (1 + 0.01 * cycle)),
                         result_path(tmp_path, "c", "r", chash, cycle))
    digest = aggregate_dir(tmp_path)

    def refuse(name: str) -> None:
        raise ValueError(name)

    json.loads((tmp_path / "aggregate.json").read_text(), parse_constant=refuse)
    row = {r["config_label"]: r for r in digest["table"]}["a"]["tokens_per_s"]
    assert row["mean"] is None and row["ci_method"] == "none" and "too large" in row["note"]
    assert not any(c["finding"] for c in digest["comparison"])


def test_history_with_an_unknown_metric_is_a_one_line_error(tmp_path, capsys):
    # `llem history DIR --metric bogus` died with a KeyError traceback.
    from llem_core.cli import main

    cfg = ExperimentConfig(model="./m")
    write_result(synthetic_result("c", "r", "a", cfg, "h1", 1),
                 result_path(tmp_path, "c", "r", "h1", 1))
    assert main(["history", str(tmp_path / "c"), "--metric", "bogus"]) == 1
    assert "error: --metric: unknown bogus (known: tokens_per_s" in capsys.readouterr().err
