"""The Airflow side without a scheduler or a daemon: DAGs built in-process from YAML, the
plan task's typed hand-off, the readiness sensor's poke against a simulated GPU, the
Docker operator against a mock Docker API client, resume, pools and the grid cache."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import yaml
from llem_airflow import factory
from llem_airflow.docker_operator import LlemDockerOperator
from llem_airflow.grid_cache import grid_summary
from llem_airflow.operators import LlemLocalOperator, local_environment
from llem_airflow.pools import pools_of
from llem_airflow.sensors import GpuReadySensor
from synthetic import synthetic_result

from docker import APIClient
from llem_core.analysis.results import SPEC_ENV, write_result
from llem_core.campaign.discovery import iter_campaigns
from llem_core.campaign.planning import PlannedRun, RunPlan
from llem_core.runtime.gpu_lock import hold_gpus
from llem_core.runtime.health import GpuState


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLEM_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "camps").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "prompts.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    return tmp_path / "camps"


def write(folder: Path, name: str, **over: Any) -> Path:
    root = folder.parent
    data: dict[str, Any] = {
        "campaign": name,
        "base": {"model": str(root / "model"), "gpus": [0], "batch_size": 1,
                 "prompts": {"kind": "jsonl", "path": str(root / "prompts.jsonl")},
                 "energy": {"meter": "none"}},
        "grid": {"max_output_tokens": [4, 8]},
        "execution": {"cycles": 2},
        "runner": {"type": "docker", "image": "img:1", "gpus": [2], "host": "srv"},
        "results_dir": str(root / "results"),
    }
    data.update(over)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_dag_shape_pools_params_and_doc(folder):
    write(folder, "a")
    dags, errors = factory.build_dags(folder)
    assert errors == []
    dag = dags["llem_a"]
    assert {t.task_id for t in dag.tasks} == {
        "plan", "host_start", "cycle_1.gpu_ready", "cycle_1.experiment", "cycle_2.gpu_ready",
        "cycle_2.experiment", "host_stop", "aggregate", "verify_complete", "change_points"}
    down = {t.task_id: t.downstream_task_ids for t in dag.tasks}
    # isolation process (the default): the run's host is set up before cycle 1 and torn
    # down after the last cycle whatever happened
    # the host starts while the plan and the first readiness check run: only the
    # experiments wait for it
    assert down["plan"] == {"cycle_1.gpu_ready"}
    assert down["host_start"] == {"cycle_1.experiment", "host_stop"}
    assert dag.get_task("cycle_1.experiment").upstream_task_ids == {"cycle_1.gpu_ready",
                                                                    "host_start"}
    assert dag.get_task("host_start").upstream_task_ids == set()
    assert down["cycle_1.experiment"] == {"cycle_2.gpu_ready"}
    assert down["cycle_2.experiment"] == {"aggregate", "host_stop"}
    assert down["aggregate"] == {"verify_complete", "change_points"}
    dag.validate()  # what the DAG processor checks (setup/teardown trigger rules)
    assert dag.get_task("cycle_1.gpu_ready").trigger_rule == "all_success"
    start, stop = dag.get_task("host_start"), dag.get_task("host_stop")
    assert start.is_setup and stop.is_teardown and stop.trigger_rule == "all_done_setup_success"
    assert start.queue == stop.queue == dag.get_task("cycle_1.experiment").queue
    assert isinstance(dag.get_task("cycle_1.experiment").partial_kwargs, dict)
    assert dag.get_task("cycle_1.experiment").operator_class.__name__ == "LlemHostedOperator"
    # runner.gpus [2]: the experiments take GPU 2's pool and the sensor reads host GPU 2
    assert dag.get_task("cycle_1.experiment").pool == "llem_srv_gpu2"
    sensor = dag.get_task("cycle_2.gpu_ready")
    assert isinstance(sensor, GpuReadySensor) and sensor.host_gpus == [2]
    assert sensor.trigger_rule == "all_done" and sensor.mode == "reschedule"
    schema = dag.params.dump()
    assert set(schema) == {"cycles", "ordering", "seed", "configs", "dry_run",
                           "max_output_tokens", "warmup_runs"}
    cycles = dag.params.get_param("cycles").schema
    assert cycles["minimum"] == 1 and cycles["maximum"] == 2
    assert set(dag.params.get_param("configs").schema["items"]["enum"]) == {
        "max_output_tokens=4", "max_output_tokens=8"}
    assert "host GPUs [2]" in dag.doc_md and "llem_srv_gpu2" in dag.doc_md
    assert "campaign:a" in dag.tags


def test_warm_isolation_releases_the_host_before_later_cycles_checks(folder):
    write(folder, "w", execution={"cycles": 2, "isolation": "warm"})
    dag = factory.build_dags(folder)[0]["llem_w"]
    assert dag.get_task("cycle_1.gpu_ready").warm_host is None  # nothing kept yet
    assert dag.get_task("cycle_2.gpu_ready").warm_host == "srv"
    assert dag.get_task("cycle_1.experiment").partial_kwargs["mode"] == "warm"


def test_container_isolation_has_no_host_tasks(folder):
    write(folder, "cold", execution={"cycles": 2, "isolation": "container"})
    dag = factory.build_dags(folder)[0]["llem_cold"]
    ids = {t.task_id for t in dag.tasks}
    assert "host_start" not in ids and "host_stop" not in ids
    assert dag.get_task("cycle_1.experiment").operator_class.__name__ == "LlemDockerOperator"
    down = {t.task_id: t.downstream_task_ids for t in dag.tasks}
    assert down["plan"] == {"cycle_1.gpu_ready"}


def test_grid_over_gpus_is_rejected_by_validate_and_factory(folder, capsys):
    path = write(folder, "multi", grid={"gpus": [[0], [1]]},
                 runner={"type": "docker", "gpus": [2, 3]})
    _, errors = factory.build_dags(folder)
    assert len(errors) == 1 and str(path) in errors[0] and "runner.gpus" in errors[0]
    assert "split it into one campaign file per GPU set" in errors[0]
    from llem_core.cli import main

    assert main(["validate", str(path)]) == 1
    assert "split it into one campaign file per GPU set" in capsys.readouterr().err


def test_gpu_outside_the_runners_gpus_is_an_error(folder):
    write(folder, "outside", base={"model": "org/m", "gpus": [1], "energy": {"meter": "none"}})
    _, errors = factory.build_dags(folder)
    assert errors and "runner.gpus exposes only 1 GPU" in errors[0]


def test_one_broken_file_loses_only_itself(folder, monkeypatch):
    write(folder, "good")
    write(folder, "hostile", execution={"cycles": 1, "experiment_timeout_s": 1e300})
    (folder / "yaml-error.yaml").write_text("campaign: [unclosed\n")
    write(folder, "dup").rename(folder / "dup-copy.yaml")
    write(folder, "dup")
    dags, errors = factory.build_dags(folder)
    assert "llem_good" in dags and "llem_dup" in dags
    text = "\n".join(errors)
    for name in ("hostile.yaml", "yaml-error.yaml", "dup.yaml"):
        assert name in text, text
    # an exception of any kind while building one DAG is that file's error
    real = factory.build_dag

    def explode(campaign, summary=None):
        if campaign.name == "good":
            raise RuntimeError("boom")
        return real(campaign, summary)

    monkeypatch.setattr(factory, "build_dag", explode)
    dags, errors = factory.build_dags(folder)
    assert "llem_good" not in dags and "llem_dup" in dags
    assert any("good.yaml" in e and "RuntimeError: boom" in e for e in errors)


def context(params: dict[str, Any], conf: dict[str, Any] | None = None,
            run_id: str = "manual__1") -> dict[str, Any]:
    return {"params": params, "run_id": run_id, "dag_run": SimpleNamespace(conf=conf or {})}


def plan_of(folder: Path, name: str = "a", **params: Any) -> dict[str, Any]:
    [campaign], _ = iter_campaigns(folder)
    defaults = {"cycles": 2, "ordering": "interleaved", "seed": 0, "configs": [],
                "dry_run": False, "max_output_tokens": None, "warmup_runs": None}
    return factory.plan_task(campaign.loaded.config, context({**defaults, **params}))


def test_plan_task_hands_off_typed_runs_and_writes_plan_json(folder):
    write(folder, "a")
    out = plan_of(folder)
    plan = RunPlan.model_validate(out["plan"])
    assert [(r.name, r.cycle) for r in plan.runs] == [
        ("max_output_tokens=4", 1), ("max_output_tokens=8", 1),
        ("max_output_tokens=4", 2), ("max_output_tokens=8", 2)]
    runs = [PlannedRun.model_validate(r) for r in out["cycle_2"]]
    assert [r.cycle for r in runs] == [2, 2]
    assert runs[0].placement.host_gpus == [2] and runs[0].placement.device_gpus == [0]
    assert runs[0].spec.config.max_output_tokens == 4
    assert json.loads(Path(plan.run_dir, "plan.json").read_text())["runs"][0]["cycle"] == 1
    # a dry run plans everything and hands no run to any cycle
    dry = plan_of(folder, dry_run=True)
    assert dry["cycle_1"] == [] and len(dry["plan"]["runs"]) == 4


def test_plan_task_refuses_unknown_conf_keys(folder):
    from airflow.sdk.exceptions import AirflowFailException

    write(folder, "a")
    [campaign], _ = iter_campaigns(folder)
    params = {"cycles": 2, "ordering": "interleaved", "seed": 0, "configs": [],
              "dry_run": False, "max_output_tokens": None, "warmup_runs": None}
    with pytest.raises(AirflowFailException, match=r"unknown trigger param\(s\) \['cycle'\]"):
        factory.plan_task(campaign.loaded.config, context(params, conf={"cycle": 2}))
    with pytest.raises(AirflowFailException, match="configs: unknown configurations"):
        factory.plan_task(campaign.loaded.config, context({**params, "configs": ["nope"]}))


class FakeTI:
    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert task_ids == "plan" and key == "cycle_1"
        return self.runs

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def test_sensor_waits_for_the_placed_gpu_then_returns_validated_runs(folder, monkeypatch):
    write(folder, "a")
    out = plan_of(folder)
    dag = factory.build_dags(folder)[0]["llem_a"]
    sensor = dag.get_task("cycle_1.gpu_ready")
    asked: list[Any] = []
    temps = iter([95.0, 40.0])

    def reader(indices):
        asked.append(indices)
        return [GpuState(index=i, name="sim", temperature_c=next(temps), memory_used_pct=0.0)
                for i in indices]

    monkeypatch.setattr(GpuReadySensor, "reader", staticmethod(reader))
    ti = FakeTI(out["cycle_1"])
    ctx = {"params": {"cycles": 2, "dry_run": False}, "ti": ti}
    assert sensor.poke(ctx) is False  # 95 C is above the campaign's 80 C limit
    done = sensor.poke(ctx)
    assert asked == [[2], [2]]
    assert done.is_done and [r["name"] for r in done.xcom_value] == [
        "max_output_tokens=4", "max_output_tokens=8"]
    assert ti.pushed["readiness"]["ready"] and ti.pushed["readiness"]["host_gpus"] == [2]
    # a malformed hand-off fails in the sensor, not inside an experiment
    ti.runs = [{"name": "x"}]
    with pytest.raises(ValueError, match="validation error"):
        sensor.poke(ctx)


def docker_operator(run: dict[str, Any], results: Path, **kw: Any) -> LlemDockerOperator:
    args = factory.docker_args(factory.DockerRunner(image="{{ var.value.secret }}",
                                                    gpus=[2], shm_size="1g"))
    return LlemDockerOperator(task_id="experiment", run=run, results_dir=str(results),
                              **args, **kw)


def mock_client(on_start=None) -> mock.Mock:
    client = mock.Mock(spec=APIClient)
    client.images.return_value = [{"Id": "sha256:img"}]
    client.create_host_config.side_effect = lambda **kw: kw
    client.create_container.return_value = {"Id": "c0ffee"}
    client.attach.return_value = iter([])
    client.wait.return_value = {"StatusCode": 0}
    if on_start:
        client.start.side_effect = on_start
    return client


def write_synthetic(run: PlannedRun) -> None:
    spec = run.spec
    write_result(synthetic_result(spec.campaign, spec.run_id, run.name, spec.config,
                                  run.config_hash, run.cycle), run.result_path)


def execute_docker_run(folder: Path) -> tuple[dict[str, Any], PlannedRun, mock.Mock,
                                                dict[str, Any]]:
    """Plan campaign "a", run its first experiment against a mock Docker client whose
    container "writes" a result; (planned run as XCom, validated, client, summary)."""
    write(folder, "a")
    raw = plan_of(folder)["cycle_1"][0]
    run = PlannedRun.model_validate(raw)
    client = mock_client(on_start=lambda _id: write_synthetic(run))
    op = docker_operator(raw, folder.parent / "results")
    op.__dict__["hook"] = mock.Mock(api_client=client)
    return raw, run, client, op.execute({})


def test_docker_operator_runs_a_locked_down_container(folder):
    raw, run, client, summary = execute_docker_run(folder)
    assert summary["config_hash"] == run.config_hash and summary["cycle"] == 1
    create = client.create_container.call_args.kwargs
    host = create["host_config"]
    assert host["network_mode"] == "none" and host["privileged"] is False
    assert create["image"] == "{{ var.value.secret }}"  # data, never rendered
    assert LlemDockerOperator.template_fields == ()
    assert create["command"] == ["llem", "run-experiment", "--out", run.result_path]
    env = create["environment"]
    assert PlannedRun.model_validate({**raw, "spec": json.loads(env[SPEC_ENV])}) == run
    assert env["LLEM_IN_CONTAINER"] == "1" and env["LLEM_HOST_NAME"]
    mounts = {m["Target"]: m for m in host["mounts"]}
    root = folder.parent
    assert mounts[str(root / "results")]["ReadOnly"] is False
    assert mounts[str(root / "model")]["ReadOnly"] is True
    assert mounts[str(root / "prompts.jsonl")]["ReadOnly"] is True
    [device] = host["device_requests"]
    assert device["DeviceIDs"] == ["2"] and device["Capabilities"] == [["gpu"]]
    assert host["shm_size"] == 2**30 and host["ipc_mode"] == "private"


def test_docker_runner_ipc_mode_reaches_the_container(folder, monkeypatch):
    args = factory.docker_args(factory.DockerRunner(image="i", ipc_mode="host", shm_size="16g"))
    assert args["ipc_mode"] == "host" and args["shm_size"] == 16 * 2**30
    from llem_core.campaign.config import CampaignConfig
    from llem_core.campaign.trust import policy_errors

    cfg = CampaignConfig.model_validate({"campaign": "t", "base": {"model": "org/m"},
                                         "results_dir": "/r",
                                         "runner": {"image": "i", "ipc_mode": "host"}})
    monkeypatch.delenv("LLEM_ALLOW_HOST_IPC", raising=False)
    assert [e.path for e in policy_errors(cfg)] == ["runner.ipc_mode"]
    monkeypatch.setenv("LLEM_ALLOW_HOST_IPC", "1")
    assert policy_errors(cfg) == []


def test_resume_returns_a_measured_result_without_running_anything(folder):
    write(folder, "a")
    raw = plan_of(folder)["cycle_1"][0]
    run = PlannedRun.model_validate(raw)
    write_synthetic(run)
    before = Path(run.result_path).read_bytes()
    client = mock_client()
    op = docker_operator(raw, folder.parent / "results")
    op.__dict__["hook"] = mock.Mock(api_client=client)
    summary = op.execute({})
    assert summary["reused"] is True and summary["cycle"] == 1
    client.create_container.assert_not_called()
    assert Path(run.result_path).read_bytes() == before


def test_resume_never_replaces_an_unreadable_result(folder):
    from airflow.sdk.exceptions import AirflowException

    write(folder, "a", runner={"type": "local"})
    raw = plan_of(folder)["cycle_1"][0]
    path = Path(raw["result_path"])
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    op = LlemLocalOperator(task_id="experiment", run=raw, python="/nonexistent/python")
    with pytest.raises(AirflowException, match="it is kept: move it away"):
        op.execute({})
    assert path.read_text() == "{not json"


def test_local_runner_passes_no_worker_secrets():
    env = local_environment('{"x": 1}', {
        "PATH": "/bin", "HOME": "/h", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://p",
        "AIRFLOW__CORE__FERNET_KEY": "k", "AIRFLOW__API_AUTH__JWT_SECRET": "s",
        "AWS_SECRET_ACCESS_KEY": "a", "LLEM_CACHE_DIR": "/c", "LC_ALL": "C"})
    assert env[SPEC_ENV] == '{"x": 1}'
    assert {"PATH", "HOME", "LLEM_CACHE_DIR", "LC_ALL"} <= set(env)
    assert not any(k.startswith("AIRFLOW__") or k.startswith("AWS") for k in env)


def test_pools_follow_the_placement(folder):
    write(folder, "a")
    write(folder, "cpu", base={"model": "org/m", "device": "cpu", "energy": {"meter": "none"}},
          runner={"type": "local", "host": "lab"})
    write(folder, "multi", base={"model": "org/m", "gpus": [0, 1], "energy": {"meter": "none"}},
          runner={"type": "docker", "gpus": [3, 1], "host": "srv"})
    names, errors = pools_of(folder)
    assert errors == []
    assert set(names) == {"llem_srv_gpu2", "llem_lab_cpu", "llem_srv_gpu1", "llem_srv_gpu3"}


def test_grid_cache_expands_once_per_file_version(folder, monkeypatch):
    path = write(folder, "a")
    [campaign], _ = iter_campaigns(folder)
    first = grid_summary(campaign)
    import llem_airflow.grid_cache as gc

    monkeypatch.setattr(gc, "expand_or_raise", mock.Mock(side_effect=AssertionError("again")))
    assert grid_summary(campaign) == first  # served from the cache
    write(folder, "a", grid={"max_output_tokens": [4, 8, 16]})
    [changed], _ = iter_campaigns(folder)
    with pytest.raises(AssertionError, match="again"):
        grid_summary(changed)  # new content, new key
    assert path.exists()


def test_gpu_locks_serialise_experiments_sharing_a_gpu(tmp_path):
    order: list[str] = []
    entered = threading.Event()

    def first() -> None:
        with hold_gpus([0, 1], folder=tmp_path):
            entered.set()
            order.append("first in")
            time.sleep(0.3)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    entered.wait(5)
    with hold_gpus([1], folder=tmp_path, poll_s=0.02) as waited:
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"] and waited > 0.1
    with hold_gpus([5], folder=tmp_path) as waited:  # another GPU: no wait
        assert waited < 0.1


def test_each_dag_comes_from_the_campaigns_file_only(folder, monkeypatch):
    """The errors file builds every DAG to find errors but must not register them: a DAG
    of two files would flip its file (what its tasks re-parse) between them."""
    from airflow.dag_processing.dagbag import DagBag

    write(folder, "one")
    write(folder, "two")
    monkeypatch.setenv("LLEM_CAMPAIGNS_DIR", str(folder))
    dags_dir = Path(__file__).resolve().parents[1] / "dags"
    errors_bag = DagBag(dag_folder=str(dags_dir / "llem_campaign_errors.py"))
    assert errors_bag.import_errors == {} and errors_bag.dag_ids == []
    bag = DagBag(dag_folder=str(dags_dir))
    assert sorted(bag.dag_ids) == ["llem_one", "llem_two"], bag.import_errors
    assert all(Path(bag.dags[d].fileloc).name == "llem_campaigns.py" for d in bag.dag_ids)


def test_the_stack_byte_compiles_llem(monkeypatch, tmp_path):
    """Task processes import llem afresh: its bytecode must exist even where nothing
    writes it on import (PYTHONDONTWRITEBYTECODE, a read-only checkout)."""
    import importlib.util

    from llem_airflow import stack

    import llem_core

    # a fresh bytecode folder: what an earlier import wrote does not count
    monkeypatch.setattr("sys.pycache_prefix", str(tmp_path / "pyc"))
    stack.compile_bytecode()
    sources = list(Path(llem_core.__path__[0]).rglob("*.py"))
    assert sources and all(Path(importlib.util.cache_from_source(str(p))).is_file()
                           for p in sources)


PARSE_HEAVY = ("torch", "transformers", "pynvml", "numpy", "pandas", "scipy", "pyarrow",
               "matplotlib")


@pytest.mark.parametrize("runner,isolation", [("local", "process"), ("local", "container"),
                                               ("docker", "process"), ("docker", "warm"),
                                               ("docker", "container")])
def test_parsing_the_dag_file_imports_no_measurement_stack(folder, runner, isolation):
    """The scheduler, the DAG processor and every task parse the DAG file: no torch,
    transformers or NVML there, no analysis stack, and no Docker client for a campaign
    whose tasks start no container while parsing (an experiment host is started by a task;
    only isolation container builds Docker operators)."""
    import subprocess
    import sys

    over: dict[str, Any] = {"runner": {"type": "local"}} if runner == "local" else {}
    over["execution"] = {"cycles": 2, "isolation": isolation}
    write(folder, "a", **over)
    docker_operators = runner == "docker" and isolation == "container"
    dag_file = Path(factory.__file__).parents[2] / "dags" / "llem_campaigns.py"
    code = ("import runpy, sys\n"
            f"ns = runpy.run_path({str(dag_file)!r})\n"
            "assert 'llem_a' in ns, sorted(ns)\n"
            f"heavy = {PARSE_HEAVY + (() if docker_operators else ('docker',))!r}\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    env = {**os.environ, "LLEM_CAMPAIGNS_DIR": str(folder)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_a_docker_host_container_gets_the_runners_settings(folder, monkeypatch, tmp_path):
    """isolation process/warm with the Docker runner: the DAG holds the runner's settings as
    plain data, and the host container is started from them locked down like an experiment
    container (no network, the runner's GPUs, mounts read-only, the caller's uid)."""
    from llem_airflow import host_tasks

    monkeypatch.setenv("LLEM_HOST_ROOT", str(tmp_path / "hosts"))
    cache = tmp_path / "hf"
    cache.mkdir()
    write(folder, "a", runner={"type": "docker", "image": "img:1", "gpus": [2, 3],
                               "host": "srv", "model_cache": str(cache), "shm_size": "1g",
                               "mounts": [{"source": str(tmp_path), "target": "/data"}]})
    [campaign], _ = iter_campaigns(folder)
    args = factory.host_args(campaign.loaded.config, grid_summary(campaign))
    json.dumps(args)  # plain data: nothing of the Docker client at parse time
    client = mock.Mock()
    client.containers.list.return_value = []
    monkeypatch.setattr("docker.DockerClient", lambda base_url: client)
    monkeypatch.setattr(host_tasks, "_wait_alive", lambda *a, **k: {"pid": 7})
    info = host_tasks.start_docker("k1", "warm", args["docker"], args["results_dir"],
                                   args["inputs"], {"LLEM_ISOLATION": "warm"})
    assert info["host_pid"] == 7
    image, = client.containers.run.call_args.args
    kw = client.containers.run.call_args.kwargs
    assert image == "img:1" and kw["network_mode"] == "none" and kw["privileged"] is False
    assert kw["init"] is True  # a reaper for what serving engines leave orphaned
    assert kw["command"][:2] == ["llem", "host"] and "warm" in kw["command"]
    mounts = {m["Target"]: m for m in kw["mounts"]}
    assert mounts["/data"]["ReadOnly"] is True and mounts["/models-cache"]["ReadOnly"] is True
    assert mounts[args["results_dir"]]["ReadOnly"] is False
    assert mounts[str(folder.parent / "model")]["ReadOnly"] is True
    assert any(t.endswith("/k1") and not m["ReadOnly"] for t, m in mounts.items())  # socket
    [device] = kw["device_requests"]
    assert device["DeviceIDs"] == ["2", "3"] and device["Capabilities"] == [["gpu"]]
    assert kw["shm_size"] == 2**30 and kw["user"] == f"{os.getuid()}:{os.getgid()}"
    assert kw["environment"]["HF_HUB_OFFLINE"] == "1"
    assert kw["environment"]["LLEM_ISOLATION"] == "warm"
    assert kw["labels"] == {host_tasks.LABEL: "k1"}


def _counting_parse(monkeypatch) -> list[Path]:
    from llem_core.campaign import discovery
    parsed: list[Path] = []
    real = discovery.parse_campaign_text

    def parse(text: str, path: Path):
        parsed.append(Path(path))
        return real(text, path)

    monkeypatch.setattr(discovery, "parse_campaign_text", parse)
    return parsed


def test_a_task_parses_only_its_own_campaign_file(folder, monkeypatch):
    """Every task parses the DAG file for its one DAG: once the other files' names are
    known (by their exact text) they are read and hashed but not validated again."""
    for i in range(6):
        write(folder, f"c{i}")
    (folder / "broken.yaml").write_text("campaign: [\n")
    # a second file claiming c0's name, before c4: an error of its own, name remembered
    (folder / "c0-copy.yaml").write_text((folder / "c0.yaml").read_text())
    parsed = _counting_parse(monkeypatch)
    full, errors = factory.build_dags(folder)  # the DAG processor's walk
    assert len(full) == 6 and len(errors) == 2
    assert factory.build_dags(folder, only="llem_c4")[0].keys() == {"llem_c4"}  # learns
    parsed.clear()
    dags, _ = factory.build_dags(folder, only="llem_c4")
    assert list(dags) == ["llem_c4"]
    # the broken file has no known name (read again, as before); c5 comes after c4
    assert sorted(p.name for p in parsed) == ["broken.yaml", "c4.yaml"]
    # read every file whose name is unknown (the broken one), found none
    assert factory.build_dags(folder, only="llem_nope") == ({}, errors[:1])
    assert factory.build_dags(folder, only="not_a_llem_dag") == ({}, [])


def test_without_a_usable_cache_a_task_still_finds_its_campaign(folder, monkeypatch):
    """A read-only cache folder, or none at all (no HOME), only costs parse time."""
    import stat

    from llem_core.campaign import discovery
    write(folder, "a")
    write(folder, "b")
    cache = Path(os.environ["LLEM_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(cache, os.W_OK):  # root writes anyway: simulate the refusal
            monkeypatch.setattr("llem_core.analysis.results.write_atomic",
                                mock.Mock(side_effect=PermissionError("read-only")))
        assert list(factory.build_dags(folder, only="llem_b")[0]) == ["llem_b"]
    finally:
        cache.chmod(stat.S_IRWXU)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(discovery, "cache_root", no_home)
    assert list(factory.build_dags(folder, only="llem_a")[0]) == ["llem_a"]
    assert [c.name for c in discovery.iter_campaigns(folder)[0]] == ["a", "b"]


def test_a_tasks_campaign_is_the_one_the_full_walk_gives_it(folder, monkeypatch, tmp_path):
    """Two files claiming one name: the first valid one owns it, whichever way the folder
    is read; an edited file is read again (its text, not its path, is the key)."""
    from llem_core.campaign.discovery import iter_campaigns

    prompts = tmp_path / "own-prompts.jsonl"
    prompts.write_text('{"text": "hi"}\n')
    a = write(folder, "a", base={"model": str(tmp_path / "model"), "batch_size": 1,
                                 "prompts": {"kind": "jsonl", "path": str(prompts)},
                                 "energy": {"meter": "none"}})
    b = folder / "b.yaml"
    b.write_text(a.read_text().replace(str(prompts), str(tmp_path / "prompts.jsonl")))

    def owner(only: str | None) -> Path:
        found, _ = iter_campaigns(folder, only=only)
        return next(c.path for c in found if c.name == "a")

    iter_campaigns(folder)  # names known
    assert owner(None) == owner("a") == a
    prompts.unlink()  # a.yaml is now invalid (its prompts are gone): b.yaml owns "a"
    assert owner(None) == owner("a") == b
    b.write_text(b.read_text().replace("campaign: a", "campaign: renamed"))
    found, _ = iter_campaigns(folder, only="renamed")
    assert [c.path for c in found] == [b]
    assert iter_campaigns(folder, only="a")[0] == []


def test_map_index_label_fits_airflows_column(folder):
    """A name derived from grid values has no length limit; Airflow keeps the rendered map
    index in a VARCHAR(250) that PostgreSQL enforces (a longer one fails the task's state
    updates; SQLite hides it). The label is cut, the name itself is kept."""
    from types import SimpleNamespace

    from llem_core.campaign.discovery import iter_campaigns
    from llem_core.campaign.planning import plan_run

    write(folder, "long", grid={"extra.note": ["n" * 5000, "short"]},
          execution={"cycles": 100})
    dags, errors = factory.build_dags(folder)
    assert errors == []
    dag = dags["llem_long"]
    template = dag.get_task("cycle_1.experiment").partial_kwargs["map_index_template"]
    [campaign], _ = iter_campaigns(folder)
    plan = plan_run(campaign.loaded.config, {"cycles": 100}, "r1")
    assert max(len(r.name) for r in plan.runs) > 5000
    env = dag.get_template_env()
    labels = {env.from_string(template).render(task=SimpleNamespace(run=r.model_dump()))
              for r in plan.runs}
    assert max(len(label) for label in labels) <= 250
    assert "extra.note=short · cycle 100" in labels


# --- what Airflow's UI shows: the trigger form and the DAG list (issue 25) ------------------

def _as_the_ui_gets_it(dag: Any) -> Any:
    """The DAG as the API server and the DAG processor see it: serialized, then rebuilt."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))


def _required_in_form(schema: dict[str, Any]) -> bool:
    """Airflow 3.3's trigger form marks a field required (and refuses it empty) when its
    schema has a type that does not allow null (ui/src/components/FlexibleForm)."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_trigger_form_help_is_markdown_and_only_needed_fields_are_required(folder):
    write(folder, "a", schedule="0 3 * * *", schedule_window={"timezone": "Europe/Berlin"})
    dag = _as_the_ui_gets_it(factory.build_dags(folder)[0]["llem_a"])
    form = {name: param.dump() for name, param in dag.params.items()}  # what the API sends
    shown = {}
    for name, spec in form.items():
        # the form shows `description` as plain text (backticks and all) and, only when
        # it is None, the schema's description_md as Markdown
        assert spec["description"] is None and spec["schema"]["description_md"], name
        shown[name] = spec["schema"]["description_md"]
    assert {n for n, spec in form.items() if _required_in_form(spec["schema"])} == {
        "cycles", "ordering", "seed"}
    # why cycles stop at the file's value, and where to raise it
    assert "one task group per cycle" in shown["cycles"]
    assert "`execution.max_cycles`" in shown["cycles"] and "1 to 2" in shown["cycles"]
    assert "Europe/Berlin" in shown["cycles"]  # when the campaign runs by itself
    # the DAG list shows the description as plain text too
    assert "`" not in dag.description and "0 3 * * * in Europe/Berlin" in dag.description
    # what the form sends for the optional fields passes Airflow's check, and the plan
    # task reads it: the emptied multi-select sends null, which is every configuration
    sent = {"configs": None, "dry_run": True, "max_output_tokens": None, "warmup_runs": None}
    assert dag.params.deep_merge(sent).validate() == {
        **sent, "cycles": 2, "ordering": "interleaved", "seed": 0}
    out = plan_of(folder, configs=None)
    assert len(out["plan"]["runs"]) == 4


def test_cycles_help_follows_max_cycles(folder):
    write(folder, "m", execution={"cycles": 2, "max_cycles": 5})
    write(folder, "top", execution={"cycles": 100})
    dags = factory.build_dags(folder)[0]
    help_m = dags["llem_m"].params.get_param("cycles").schema["description_md"]
    assert "1 to 5" in help_m and "(it is 5; up to 100)" in help_m
    help_top = dags["llem_top"].params.get_param("cycles").schema["description_md"]
    assert "raise" not in help_top and "100 is the most" in help_top


def _fire_times(timetable: Any, start: Any, n: int) -> list[Any]:
    import pendulum
    from airflow.timetables.base import TimeRestriction

    restriction = TimeRestriction(earliest=pendulum.instance(start), latest=None, catchup=True)
    out, last = [], None
    for _ in range(n):
        info = timetable.next_dagrun_info(last_automated_data_interval=last,
                                          restriction=restriction)
        out.append((info.run_after, info.logical_date, info.data_interval))
        last = info.data_interval
    return out


def test_dag_list_shows_the_schedules_zone_and_runs_are_unchanged(folder):
    import datetime as dt

    from airflow.sdk import DAG

    write(folder, "utc", schedule="30 2 * * *")
    write(folder, "berlin", schedule="30 2 * * *",
          schedule_window={"timezone": "Europe/Berlin"})
    write(folder, "preset", schedule="@daily")
    write(folder, "once", schedule="@once")
    write(folder, "manual")
    dags, errors = factory.build_dags(folder)
    assert errors == []
    ui = {name: _as_the_ui_gets_it(dag).timetable for name, dag in dags.items()}
    # what the DAG processor stores as timetable_summary / timetable_description
    assert ui["llem_utc"].summary == "30 2 * * * (UTC)"
    assert ui["llem_utc"].description == "At 02:30 (UTC)"
    assert ui["llem_berlin"].summary == "30 2 * * * (Europe/Berlin)"
    assert ui["llem_berlin"].description.endswith("(Europe/Berlin)")
    assert ui["llem_preset"].summary == "0 0 * * * (UTC)"
    assert ui["llem_once"].summary == "@once" and ui["llem_manual"].summary == "None"
    # the runs are those Airflow makes of the bare cron string (its default config), across
    # a DST change for the zoned one
    start = dt.datetime(2026, 3, 25, tzinfo=dt.UTC)
    for name, cron in (("llem_utc", "30 2 * * *"), ("llem_preset", "@daily")):
        bare = _as_the_ui_gets_it(DAG(dag_id="bare", schedule=cron,
                                      start_date=factory.START_DATE)).timetable
        assert _fire_times(ui[name], start, 10) == _fire_times(bare, start, 10)
    from airflow.timetables.trigger import CronTriggerTimetable

    berlin = CronTriggerTimetable("30 2 * * *", timezone="Europe/Berlin")
    assert _fire_times(ui["llem_berlin"], start, 10) == _fire_times(berlin, start, 10)
