"""`llem plan` is the DAG's planner: same params, same bounds, same listing, same errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from llem_airflow import factory

from llem_core.campaign.discovery import iter_campaigns
from llem_core.cli import main


@pytest.fixture
def campaign(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "camps").mkdir()
    (tmp_path / "model").mkdir()
    path = tmp_path / "camps" / "a.yaml"
    path.write_text(yaml.safe_dump({
        "campaign": "a",
        "base": {"model": str(tmp_path / "model"), "device": "cpu", "batch_size": 1,
                 "energy": {"meter": "none"}},
        "grid": {"max_output_tokens": [4, 8, 16]},
        "execution": {"cycles": 2, "max_cycles": 3},
        "runner": {"type": "local"},
        "results_dir": str(tmp_path / "results"),
    }))
    return path


def task_plan(path: Path, run_id: str, **given: Any) -> dict[str, Any]:
    """What the DAG's plan task plans for a trigger form filled in with ``given``."""
    dags, errors = factory.build_dags(path.parent)
    assert errors == []
    [campaign], _ = iter_campaigns(path.parent)
    params = {**dags["llem_a"].params.dump(), **given}
    context = {"params": params, "run_id": run_id, "dag_run": SimpleNamespace(conf={})}
    out = factory.plan_task(campaign.loaded.config, context)
    return json.loads((Path(out["plan"]["run_dir"]) / "plan.json").read_text())


@pytest.mark.parametrize("argv,given", [
    (["--cycles", "4"], {"cycles": 4}),  # beyond execution.max_cycles
    (["--ordering", "random"], {"ordering": "random"}),
    (["--seed", "-1"], {"seed": -1}),
    (["--config", "nope"], {"configs": ["nope"]}),
    (["--config", "max_output_tokens=4", "--config", "max_output_tokens=4"],
     {"configs": ["max_output_tokens=4"] * 2}),
    (["--max-output-tokens", "0"], {"max_output_tokens": 0}),
])
def test_the_cli_refuses_what_the_plan_task_refuses_with_its_message(campaign, capsys, argv,
                                                                      given):
    with pytest.raises(AirflowFailException) as refused:
        task_plan(campaign, "manual__1", **given)
    assert main(["plan", str(campaign), *argv]) == 1
    assert capsys.readouterr().err.strip() == f"{campaign}: {refused.value}"


@pytest.mark.parametrize("argv,given", [
    ([], {}),
    (["--cycles", "3", "--ordering", "shuffled", "--seed", "7"],
     {"cycles": 3, "ordering": "shuffled", "seed": 7}),
    (["--config", "max_output_tokens=16", "--config", "max_output_tokens=4", "--dry-run"],
     {"configs": ["max_output_tokens=16", "max_output_tokens=4"], "dry_run": True}),
    (["--max-output-tokens", "2", "--cycles", "1"], {"max_output_tokens": 2, "cycles": 1}),
])
def test_the_cli_listing_is_the_plan_tasks(campaign, capsys, argv, given):
    expected = task_plan(campaign, "manual__1", **given)
    assert main(["plan", str(campaign), "--run-id", "manual__1", "--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    # and the table shows the same runs in the same order
    assert main(["plan", str(campaign), *argv]) == 0
    table = capsys.readouterr().out
    names = [r["name"] for r in expected["runs"]]
    assert [n for line in table.splitlines() for n in set(names) if f" {n} " in line] == names
