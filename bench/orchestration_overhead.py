"""Orchestration overhead per experiment in every isolation mode and runner, one real Airflow.

The same 2-configuration x 3-cycle campaign of the tiny model runs with isolation
container, process and warm, on the Docker and the local runner, one after the other in one
Airflow (SQLite, LocalExecutor, the local stack's scheduler settings). For each run:

- per experiment = (first experiment start to last experiment end, minus the readiness
  sensors between cycles, minus the measured windows) / experiments: scheduling gaps,
  container/process/child start, imports, model load, warm-up, result I/O;
- fixed per run = the rest of the DAG run's wall time: plan, host setup and teardown, the
  first cycle's sensor, aggregate, verify, and the scheduling around them.

It also prints tokens/s and TTFT of each configuration per mode (mean over cycles, with the
spread over cycles), to show that the measurement does not depend on the mode.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CYCLES, CONFIGS = 3, 2
MODES = ("container", "process", "warm")
RUNNERS = {"docker": {"type": "docker", "image": "llem-experiment:test"},
           "local": {"type": "local"}}


def campaign(name: str, runner: dict, mode: str, results: Path) -> dict:
    return {"campaign": name,
            "base": {"model": str(REPO / "models" / "tiny-llama"), "dtype": "float32",
                     "device": "cpu", "max_input_tokens": 32, "max_output_tokens": 16,
                     "min_output_tokens": 16, "warmup_runs": 1,
                     "energy": {"meter": "none", "min_window_s": 0},
                     "prompts": {"count": 8, "length": 32}},
            "grid": {"batch_size": [1, 4][:CONFIGS]},
            "execution": {"cycles": CYCLES, "isolation": mode},
            "runner": runner, "results_dir": str(results)}


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def measure(api, dag_id: str, results: Path, name: str) -> dict:
    from llem_core.results import read_result

    api.wait_for_dag(dag_id)
    run_id = f"bench_{time.time_ns()}"
    api.trigger(dag_id, {}, run_id).raise_for_status()
    state = api.wait_run(dag_id, run_id, timeout_s=1800)
    run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    wall = (_t(run["end_date"]) - _t(run["start_date"])).total_seconds()
    tis = api.task_instances(dag_id, run_id)
    exps = [t for t in tis if t["task_id"].endswith(".experiment") and t["map_index"] >= 0]
    first = min(_t(t["start_date"]) for t in exps)
    last = max(_t(t["end_date"]) for t in exps)
    span = (last - first).total_seconds()
    sensors = sum((_t(t["end_date"]) - _t(t["start_date"])).total_seconds() for t in tis
                  if t["task_id"].endswith("gpu_ready") and not t["task_id"].startswith(
                      "cycle_1.") and t["start_date"] and t["end_date"])
    files = sorted((results / name).rglob("cycle_*.json"))
    res = [read_result(f) for f in files]
    windows = sum(r.metrics.window_s for r in res)
    n = len(res)
    by_config: dict[str, list] = {}
    for r in res:
        by_config.setdefault(r.name, []).append(r)
    def dur(t: dict) -> float:
        return (_t(t["end_date"]) - _t(t["start_date"])).total_seconds() \
            if t["start_date"] and t["end_date"] else 0.0

    ordered = sorted(exps, key=lambda t: t["start_date"])
    gaps = [(_t(b["start_date"]) - _t(a["end_date"])).total_seconds()
            for a, b in itertools.pairwise(ordered)]
    parts = {t["task_id"]: dur(t) for t in tis if t["task_id"] in (
        "plan", "host_start", "cycle_1.gpu_ready", "aggregate", "verify_complete", "host_stop")}
    breakdown = (f"experiment task {statistics.mean(dur(t) for t in exps):.2f} s, gap "
                 f"between experiments {statistics.median(gaps):.2f} s; "
                 + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    return {"state": state, "n": n, "wall": wall, "windows": windows, "breakdown": breakdown,
            "per_exp": (span - sensors - windows) / n, "fixed": wall - span + sensors,
            "configs": {k: ([r.metrics.output_tokens_per_s for r in v],
                            [r.metrics.ttft_s.mean for r in v]) for k, v in by_config.items()},
            "reused": sum(r.provenance.model_already_loaded for r in res)}


def main() -> int:
    import argparse

    from llem_airflow.stack import AirflowStack

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated subset")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    ap.add_argument("--workdir", help="keep the Airflow home, logs and results here "
                    "(default: a temporary folder)")
    ap.add_argument("--idle-sleep", help="[scheduler] scheduler_idle_sleep_time for this run "
                    "(default: the local stack's)")
    args = ap.parse_args()
    runners = {k: RUNNERS[k] for k in args.runners.split(",")}
    modes = [m for m in MODES if m in args.modes.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        camps = Path(tmp) / "campaigns"
        camps.mkdir()
        results = Path(tmp) / "results"
        names = []
        for runner_name, runner in runners.items():
            for mode in modes:
                name = f"bench-{runner_name}-{mode}"
                names.append((name, runner_name, mode))
                (camps / f"{name}.yaml").write_text(
                    yaml.safe_dump(campaign(name, runner, mode, results)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rows = []
        extra = ({"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": args.idle_sleep}
                 if args.idle_sleep else {})
        with AirflowStack(home=Path(tmp) / "home", campaigns=camps, port=port,
                          extra_env=extra) as stack:
            api = stack.client()
            for name, runner_name, mode in names:
                m = measure(api, f"llem_{name}", results, name)
                rows.append((runner_name, mode, m))
                print(f"{runner_name:<7} {mode:<10} {m['state']:<8} runs {m['n']:>2} wall "
                      f"{m['wall']:6.1f} s windows {m['windows']:5.2f} s per experiment "
                      f"{m['per_exp']:5.2f} s fixed per run {m['fixed']:5.1f} s "
                      f"(models reused: {m['reused']})", flush=True)
                print(f"        {m['breakdown']}", flush=True)
    print("\nmeasurements by mode (mean over cycles; spread = max - min over cycles):")
    for runner_name in runners:
        for cfg in sorted(rows[0][2]["configs"]):
            parts = []
            for r, mode, m in rows:
                if r != runner_name:
                    continue
                tps, ttft = m["configs"][cfg]
                parts.append(f"{mode} {statistics.mean(tps):7.1f} tok/s "
                             f"(spread {max(tps) - min(tps):5.1f}) TTFT "
                             f"{1e3 * statistics.mean(ttft):5.1f} ms")
            print(f"  {runner_name:<7} {cfg:<14} " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
