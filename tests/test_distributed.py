"""The distributed stack as real processes: PostgreSQL metadata DB, Redis broker, CeleryExecutor
with two workers on two queues (two "GPU servers"), driven through the REST API v2."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(what: str, found: object) -> None:
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs {what}")
        pytest.skip(f"{what} not available")


def pg_bin(name: str) -> str | None:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else shutil.which(name)


def as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    need("PostgreSQL (apt-get install postgresql)", pg_bin("initdb") and pg_bin("pg_ctl"))
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        need("psycopg2 (the distributed extra)", False)
    root = Path(tempfile.mkdtemp(prefix="llem-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = free_port()
    subprocess.run(as_postgres([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U",
                                "postgres"]), check=True, capture_output=True)
    subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"),
                                "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                                "-w", "start"]), check=True, capture_output=True)
    subprocess.run(as_postgres([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                "postgres", "-c", "CREATE DATABASE airflow"]),
                   check=True, capture_output=True)
    yield port
    subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis():
    server = shutil.which("redis-server")
    need("Redis (apt-get install redis-server)", server)
    port = free_port()
    p = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(1)
    yield port
    p.terminate()
    p.wait(10)


def campaign(name: str, queue: str, host: str, model: Path, results: Path, **extra) -> dict:
    base = {"model": str(model), "dtype": "float32", "device": "cpu", "max_input_tokens": 16,
            "max_output_tokens": 4, "min_output_tokens": 4, "warmup_runs": 0,
            "prompts": {"kind": "builtin", "count": 2, "length": 16},
            "energy": {"meter": "none", "min_window_s": 0}}
    data = {"campaign": name, "base": base, "grid": {"seed": [1, 2]},
            "execution": {"cycles": 2},
            "runner": {"type": "local", "queue": queue, "host": host},
            "results_dir": str(results)}
    data.update(extra)
    return data


@pytest.fixture(scope="module")
def stack(postgres, redis, tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("dist")
    camps = root / "campaigns"
    camps.mkdir()
    results = root / "results"
    files = {
        "dist-a": campaign("dist-a", "gpu-a", "a", tiny_model, results),
        "dist-b": campaign("dist-b", "gpu-b", "b", tiny_model, results,
                           grid={"seed": [1]}, execution={"cycles": 1},
                           experiments=[{"name": "later", "model": str(root / "later")}]),
        "sched": campaign("sched", "gpu-a", "c", tiny_model, results, grid={"seed": [5]},
                          execution={"cycles": 1}, schedule="* * * * *"),
    }
    for name, data in files.items():
        (camps / f"{name}.yaml").write_text(yaml.safe_dump(data))
    pg = f"postgres@127.0.0.1:{postgres}/airflow"
    from llem_airflow.stack import AirflowStack

    worker = ("celery", "worker", "--concurrency", "2", "--skip-serve-logs")
    s = AirflowStack(
        home=root / "home", campaigns=camps, port=free_port(),
        extra_env={
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
        },
        components=("scheduler", "dag-processor", "triggerer", "api-server",
                    (*worker, "--queues", "gpu-a,default", "--celery-hostname", "worker-a@%h"),
                    (*worker, "--queues", "gpu-b,default", "--celery-hostname", "worker-b@%h")))
    s.start(timeout_s=300)
    s.root = root  # type: ignore[attr-defined]
    yield s
    s.stop()


def experiments(api, dag_id, run_id):
    return [t for t in api.task_instances(dag_id, run_id)
            if t["task_id"].endswith(".experiment") and t["map_index"] >= 0]


def worker_log(stack, name: str) -> str:
    [log] = [p for p in (stack.home).glob(f"celery-worker*{name}*.log")]
    return log.read_text(errors="replace")


def test_campaign_runs_on_its_queue_with_params_and_xcoms(stack):
    api = stack.client()
    api.wait_for_dag("llem_dist-a")
    run_id = f"dist_{time.time_ns()}"
    r = api.trigger("llem_dist-a", {"cycles": 2, "ordering": "shuffled", "seed": 3}, run_id)
    assert r.status_code in (200, 201), r.text
    assert api.wait_run("llem_dist-a", run_id, timeout_s=900) == "success"
    exps = experiments(api, "llem_dist-a", run_id)
    assert len(exps) == 4 and {t["queue"] for t in exps} == {"gpu-a"}
    assert {t["pool"] for t in exps} == {"llem_a_cpu"}
    summary = api.xcom("llem_dist-a", run_id, "cycle_2.experiment", map_index=1)
    assert summary["status"] == "success" and summary["cycle"] == 2
    digest = api.xcom("llem_dist-a", run_id, "aggregate")
    assert digest["results"] == 4 and digest["missing"] == []
    assert {r["config_name"] for r in digest["table"]} == {"seed=1", "seed=2"}
    # the gpu-a worker ran them, the gpu-b worker did not
    assert "llem_dist-a" in worker_log(stack, "gpu-a")
    assert "cycle_1.experiment" not in worker_log(stack, "gpu-b").split("llem_dist-a")[-1] \
        or "llem_dist-a" not in worker_log(stack, "gpu-b")


def test_clear_failed_experiment_through_rest_reruns_only_it(stack, tiny_model):
    api = stack.client()
    dag_id = "llem_dist-b"
    api.wait_for_dag(dag_id)
    run_id = f"dist_{time.time_ns()}"
    assert api.trigger(dag_id, {}, run_id).status_code in (200, 201)
    assert api.wait_run(dag_id, run_id, timeout_s=900) == "failed"
    by_name = {t["rendered_map_index"].split(" · ")[0]: t
               for t in experiments(api, dag_id, run_id)}
    assert by_name["later"]["state"] == "failed" and by_name["seed=1"]["state"] == "success"
    assert {t["queue"] for t in by_name.values()} == {"gpu-b"}
    ok_try = by_name["seed=1"]["try_number"]
    shutil.copytree(tiny_model, stack.root / "later")
    api.clear(dag_id, run_id, [["cycle_1.experiment", by_name["later"]["map_index"]]])
    assert api.wait_run(dag_id, run_id, timeout_s=900) == "success"
    after = {t["map_index"]: t for t in experiments(api, dag_id, run_id)}
    assert after[by_name["later"]["map_index"]]["state"] == "success"
    assert after[by_name["seed=1"]["map_index"]]["try_number"] == ok_try
    assert api.xcom(dag_id, run_id, "aggregate")["missing"] == []


def test_scheduled_campaign_runs_on_schedule_with_default_params(stack):
    api = stack.client()
    dag_id = "llem_sched"
    api.wait_for_dag(dag_id)
    deadline = time.time() + 240
    runs: list = []
    while time.time() < deadline:
        runs = [r for r in api.get(f"/dags/{dag_id}/dagRuns")["dag_runs"]
                if r["run_type"] == "scheduled"]
        if any(r["state"] == "success" for r in runs):
            break
        time.sleep(5)
    api.http.patch(f"/dags/{dag_id}", json={"is_paused": True})
    done = [r for r in runs if r["state"] == "success"]
    assert done, runs
    run = done[0]
    assert run["conf"] in ({}, None)
    assert api.xcom(dag_id, run["dag_run_id"], "aggregate")["results"] == 1
