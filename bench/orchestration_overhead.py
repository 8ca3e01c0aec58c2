"""Orchestration overhead per experiment in every isolation mode and runner, one real Airflow.

The same 2-configuration x 3-cycle campaign of the tiny model runs with isolation
container, process and warm, on the Docker and the local runner, one after the other in one
Airflow (SQLite, LocalExecutor, the local stack's scheduler settings). Each run's wall time
is split into (see :func:`split`):

- per experiment = an experiment task's duration minus its measured window, plus the
  scheduling gap between two experiments of a cycle (means over the run):
  container/process/child start, imports, model load, warm-up, result I/O, Airflow's own
  per-task work; what one more configuration costs;
- per cycle = from a cycle's last experiment to the next cycle's first: the readiness
  sensor and the scheduling around it;
- fixed per run = before the first experiment (plan, host setup, cycle 1's sensor) and after
  the last (aggregate, verify, host teardown).

It also prints the issue's split (per experiment = (first experiment start to last
experiment end, minus the sensors' task durations between cycles, minus the windows) /
experiments; the scheduling gaps around those sensors then count per experiment).

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


def _dur(t: dict) -> float:
    return (_t(t["end_date"]) - _t(t["start_date"])).total_seconds() \
        if t["start_date"] and t["end_date"] else 0.0


def split(wall: float, exps: list[dict], windows: dict[tuple[str, int], float]) -> dict:
    """Where a run's wall time went, from its experiment task instances.

    ``exps`` are the experiment tasks (start/end dates, ``cycle`` and ``name``), ``windows``
    each one's measured window (0 for an experiment without a result):

    - per experiment: the mean of the tasks' durations minus their windows, plus the mean
      scheduling gap between two experiments of one cycle: what one more configuration in
      a cycle costs;
    - per cycle: the mean time from the last experiment of a cycle to the first of the next
      (the readiness sensor and the scheduling around it);
    - fixed per run: before the first experiment (plan, host start, cycle 1's sensor) and after
      the last (aggregate, verify, host stop).

    Then wall = windows + n x per experiment + (cycles - 1) x (per cycle - gap) + fixed - gap:
    each cycle has one gap fewer than experiments, which the identity gives back.
    """
    ordered = sorted(exps, key=lambda t: _t(t["start_date"]))
    tasks = [_dur(t) - windows.get((t["name"], t["cycle"]), 0.0) for t in ordered]
    within, between = [], []
    for a, b in itertools.pairwise(ordered):
        gap = (_t(b["start_date"]) - _t(a["end_date"])).total_seconds()
        (within if a["cycle"] == b["cycle"] else between).append(gap)
    span = (_t(ordered[-1]["end_date"]) - _t(ordered[0]["start_date"])).total_seconds()
    gap = statistics.mean(within) if within else 0.0
    return {"task": statistics.mean(tasks), "gap": gap,
            "per_exp": statistics.mean(tasks) + gap,
            "per_cycle": statistics.mean(between) if between else 0.0,
            "fixed": wall - span, "n": len(ordered)}


def measure(api, dag_id: str, results: Path, name: str) -> dict:
    from llem_core.analysis.results import read_result

    api.wait_for_dag(dag_id)
    run_id = f"bench_{time.time_ns()}"
    api.trigger(dag_id, {}, run_id).raise_for_status()
    state = api.wait_run(dag_id, run_id, timeout_s=1800)
    run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    wall = (_t(run["end_date"]) - _t(run["start_date"])).total_seconds()
    tis = api.task_instances(dag_id, run_id)
    exps = [t for t in tis if t["task_id"].endswith(".experiment") and t["map_index"] >= 0]
    for t in exps:  # "<name> · cycle <k>", the operators' map index template
        label, _, cycle = t["rendered_map_index"].rpartition(" · cycle ")
        t["name"], t["cycle"] = label, int(cycle)
    res = [read_result(f) for f in sorted((results / name).rglob("cycle_*.json"))]
    windows = {(r.name, r.cycle): r.metrics.window_s for r in res}
    windows_s = sum(windows.values())
    parts = split(wall, exps, windows)
    # the definition: readiness sensors between cycles (their task durations only)
    # count as fixed, everything else between the first and last experiment as per experiment
    sensors = sum(_dur(t) for t in tis if t["task_id"].endswith("gpu_ready")
                  and not t["task_id"].startswith("cycle_1."))
    span = wall - parts["fixed"]
    by_config: dict[str, list] = {}
    for r in res:
        by_config.setdefault(r.name, []).append(r)
    named = {t["task_id"]: _dur(t) for t in tis if t["task_id"] in (
        "plan", "host_start", "cycle_1.gpu_ready", "aggregate", "verify_complete", "host_stop")}
    breakdown = (f"experiment task minus window {parts['task']:.2f} s, gap to the next in its "
                 f"cycle {parts['gap']:.2f} s, cycle transition {parts['per_cycle']:.2f} s; "
                 + ", ".join(f"{k} {v:.1f}" for k, v in named.items()))
    return {"state": state, "n": len(res), "wall": wall, "windows": windows_s,
            "breakdown": breakdown, **{k: parts[k] for k in ("per_exp", "per_cycle", "fixed")},
            "issue_per_exp": (span - sensors - windows_s) / len(res),
            "issue_fixed": wall - span + sensors,
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
                      f"{m['per_exp']:5.2f} s per cycle {m['per_cycle']:5.2f} s fixed per run "
                      f"{m['fixed']:5.1f} s | issue's split: per experiment "
                      f"{m['issue_per_exp']:5.2f} s fixed {m['issue_fixed']:5.1f} s "
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
