"""A real local Airflow (SQLite, LocalExecutor) as processes, and a small REST API v2 client.

Used by the main job (scripts/run_example.py) and the integration tests: it starts the
scheduler, dag-processor, triggerer and api-server, waits until they answer, and stops
them all on exit. Authentication is the simple auth manager with every user an admin,
listening on 127.0.0.1 only: a single-user development setup, not a server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llem_core import env_names

REPO = Path(__file__).resolve().parents[2]


# The gap Airflow leaves between two tasks is set by how long an idle scheduler sleeps and
# how often a worker reports: at Airflow's defaults (1 s, 5 s) about 1.1 s per experiment;
# at these, about 0.3 s, for about 8 % of one core while the scheduler is idle (0.05 s of
# sleep gives about 0.2 s for about 25 %: not worth a core's quarter next to a measurement).
SCHEDULER_TUNING = {
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    "AIRFLOW__CORE__PARALLELISM": "16",
}


def airflow_env(home: Path, port: int, dags: Path, campaigns: Path,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # A broken campaign's import error is its `file: field: reason` lines, without a
        # Python traceback that buries them.
        "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # Short tasks (an experiment on a warm host lasts seconds): see SCHEDULER_TUNING.
        **SCHEDULER_TUNING,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "llem-local-development-only",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        env_names.CAMPAIGNS_DIR: str(campaigns),
        env_names.CACHE_DIR: str(home / "llem-cache"),
        env_names.PYTHONUNBUFFERED: "1",
    })
    env.update(extra or {})
    return env


def compile_bytecode() -> None:
    """Byte-compile llem's own packages, as installing a wheel does: every task process
    imports them afresh, and a source checkout (an editable install) has no bytecode until
    something writes it; with PYTHONDONTWRITEBYTECODE set, never (about 0.1 s per task)."""
    import compileall

    import llem_airflow
    import llem_core

    for pkg in (llem_core, llem_airflow):
        for folder in pkg.__path__:
            compileall.compile_dir(folder, quiet=2)


@dataclass
class AirflowStack:
    home: Path
    campaigns: Path
    port: int = 28080
    dags: Path = REPO / "dags"
    extra_env: dict[str, str] = field(default_factory=dict)
    # each component: an `airflow` sub-command, e.g. "scheduler" or
    # ("celery", "worker", "--queues", "gpu-a,default")
    components: tuple[str | tuple[str, ...], ...] = (
        "scheduler", "dag-processor", "triggerer", "api-server")
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return airflow_env(self.home, self.port, self.dags, self.campaigns, self.extra_env)

    @property
    def airflow(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([self.airflow, *args], env=self.env, capture_output=True,
                           text=True, timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {r.returncode}:\n"
                               f"{(r.stdout + r.stderr)[-3000:]}")
        return r

    def start(self, timeout_s: float = 180) -> AirflowStack:
        self.home.mkdir(parents=True, exist_ok=True)
        compile_bytecode()
        self.cli("db", "migrate")
        # In the stack's own environment (its allow-lists decide which campaigns are valid,
        # as in the DAG processor): a campaign without its pool would wait forever.
        r = subprocess.run([sys.executable, "-m", "llem_airflow", "pools", "--campaigns",
                            str(self.campaigns), "--airflow", self.airflow], env=self.env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"llem-airflow pools: {r.stdout[-1000:]} {r.stderr[-1000:]}")
        for comp in self.components:
            args = (comp,) if isinstance(comp, str) else tuple(comp)
            name = "-".join(a.strip("-").replace(",", "_") for a in args)[:80]
            log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
            self.procs[name] = subprocess.Popen(
                [self.airflow, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.wait_healthy(timeout_s)
        return self

    def client(self) -> ApiClient:
        return ApiClient(f"http://127.0.0.1:{self.port}")

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for comp, p in self.procs.items():
                if p.poll() is not None:
                    tail = (self.home / f"{comp}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"airflow {comp} exited {p.returncode}:\n{tail}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=5)
                if r.status_code == 200:
                    h = r.json()
                    if h.get("scheduler", {}).get("status") == "healthy":
                        return
                    last = str(h)
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(2)
        raise TimeoutError(f"Airflow not healthy after {timeout_s} s: {last}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiClient:
    """The few REST API v2 calls llem needs (trigger, wait, task instances, XCom, clear)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=f"{base}/api/v2", timeout=60)

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = self.http.get(f"/dags/{dag_id}")
            if r.status_code == 200:
                return r.json()
            time.sleep(2)
        errors = self.import_errors()
        raise TimeoutError(f"DAG {dag_id} not loaded after {timeout_s} s; import errors: "
                           f"{errors}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/importErrors").get("import_errors", [])

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None,
                run_id: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.http.post(f"/dags/{dag_id}/dagRuns", json=body)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 900,
                 progress: Any = None) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if progress is not None:
                progress(state, self.task_instances(dag_id, run_id))
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise TimeoutError(f"{dag_id}/{run_id} still {state} after {timeout_s} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                            limit=100, offset=offset)
            out.extend(page["task_instances"])
            offset += 100
            if offset >= page["total_entries"]:
                return out

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
             key: str = "return_value") -> Any:
        r = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                     f"{key}", map_index=map_index, deserialize=True, stringify=False)
        return r["value"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[Any],
              include_downstream: bool = True) -> dict[str, Any]:
        # dry_run defaults to true in the API: a clear that forgets it does nothing.
        r = self.http.post(f"/dags/{dag_id}/clearTaskInstances", json={
            "dry_run": False, "dag_run_id": run_id, "task_ids": task_ids,
            "include_downstream": include_downstream, "only_failed": False,
            "reset_dag_runs": True})
        r.raise_for_status()
        return r.json()
