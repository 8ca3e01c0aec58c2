"""Orchestration overhead per experiment, Docker runner vs local runner, on a real Airflow.

Overhead per experiment = (DAG run wall time - sum of the experiments' measured windows)
/ number of experiments: scheduling, container or process start, imports, model load,
warmup, result I/O, sensors and aggregation. Both runners run the same campaign in one
Airflow, one after the other.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CYCLES, CONFIGS = 3, 2


def campaign(name: str, runner: dict, results: Path) -> dict:
    return {"campaign": name,
            "base": {"model": str(REPO / "models" / "tiny-llama"), "dtype": "float32",
                     "device": "cpu", "max_input_tokens": 32, "max_output_tokens": 16,
                     "min_output_tokens": 16, "warmup_runs": 1,
                     "energy": {"meter": "none", "min_window_s": 0},
                     "prompts": {"count": 8, "length": 32}},
            "grid": {"batch_size": [1, 4][:CONFIGS]},
            "execution": {"cycles": CYCLES}, "runner": runner, "results_dir": str(results)}


def main() -> int:
    from llem_airflow.stack import AirflowStack

    from llem_core.results import read_result

    with tempfile.TemporaryDirectory() as tmp:
        camps = Path(tmp) / "campaigns"
        camps.mkdir()
        results = Path(tmp) / "results"
        for name, runner in (("bench-docker", {"type": "docker",
                                               "image": "llem-experiment:test"}),
                             ("bench-local", {"type": "local"})):
            (camps / f"{name}.yaml").write_text(yaml.safe_dump(campaign(name, runner, results)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rows = []
        with AirflowStack(home=Path(tmp) / "home", campaigns=camps, port=port) as stack:
            api = stack.client()
            for name in ("bench-docker", "bench-local"):
                dag_id = f"llem_{name}"
                api.wait_for_dag(dag_id)
                run_id = f"bench_{time.time_ns()}"
                api.trigger(dag_id, {}, run_id).raise_for_status()
                state = api.wait_run(dag_id, run_id, timeout_s=1800)
                run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
                wall = (datetime.fromisoformat(run["end_date"])
                        - datetime.fromisoformat(run["start_date"])).total_seconds()
                files = list((results / name).rglob("cycle_*.json"))
                windows = sum(read_result(f).metrics.window_s for f in files)
                n = len(files)
                rows.append((name.split("-")[1], state, n, wall, windows, (wall - windows) / n))
    print(f"{'runner':<8} {'state':<8} {'runs':>4} {'wall s':>8} {'windows s':>10} "
          f"{'overhead s/experiment':>22}")
    for r in rows:
        print(f"{r[0]:<8} {r[1]:<8} {r[2]:>4} {r[3]:>8.1f} {r[4]:>10.2f} {r[5]:>22.2f}")
    print(f"docker / local overhead ratio: {rows[0][5] / rows[1][5]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
