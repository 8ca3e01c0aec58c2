"""Does an idle Airflow disturb a CPU measurement, and how much CPU does its scheduler take
at each ``[scheduler] scheduler_idle_sleep_time``?

With no Airflow, then with an idle local stack (no DAG running) at idle sleeps of 1.0 s
(Airflow's default), 0.25 s (llem's) and 0.05 s, in turn on the same machine: the CPU time
the stack's processes use over 30 s of idling (in % of one core), and the tokens/s of the
same tiny-model experiment (PyTorch on the CPU, 5 s windows, 3 repetitions) measured
while that stack idles. Ratios are against the no-Airflow runs of the same session.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLEEPS = (1.0, 0.25, 0.05)


def tree_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and all their descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(f[1])
        times[pid] = (int(f[11]) + int(f[12])) / tick
    keep = set(pids)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    return sum(times.get(p, 0.0) for p in keep)


def tokens_per_s() -> float:
    from llem_core import run_experiment
    from llem_core.campaign.config import ExperimentConfig

    cfg = ExperimentConfig(model=str(REPO / "models" / "tiny-llama"), dtype="float32",
                           device="cpu", batch_size=4, max_input_tokens=32,
                           max_output_tokens=16, min_output_tokens=16, warmup_runs=2,
                           prompts={"count": 8, "length": 32},
                           energy={"meter": "none", "min_window_s": 5.0})
    return run_experiment(cfg).metrics.output_tokens_per_s


def measure(label: str) -> list[float]:
    vals = [tokens_per_s() for _ in range(3)]
    print(f"  {label:<22} tokens/s {statistics.median(vals):8.1f} "
          f"(runs {', '.join(f'{v:.0f}' for v in vals)})", flush=True)
    return vals


def main() -> int:
    from llem_airflow.stack import AirflowStack

    if not (REPO / "models" / "tiny-llama" / "config.json").exists():
        from llem_core.runtime.tinymodel import build_tiny_model

        build_tiny_model(REPO / "models" / "tiny-llama")
    tokens_per_s()  # warm the file cache and the imports
    print("no Airflow:")
    base = statistics.median(measure("no Airflow"))
    rows = []
    for sleep in SLEEPS:
        with tempfile.TemporaryDirectory() as tmp:
            camps = Path(tmp) / "campaigns"
            camps.mkdir()
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            stack = AirflowStack(home=Path(tmp) / "home", campaigns=camps, port=port,
                                 extra_env={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME":
                                            str(sleep)})
            with stack:
                time.sleep(20)  # start-up work settles
                pids = [p.pid for p in stack.procs.values()]
                sched = [stack.procs["scheduler"].pid]
                c0, s0, t0 = tree_cpu_s(pids), tree_cpu_s(sched), time.monotonic()
                time.sleep(30)
                dt = time.monotonic() - t0
                cpu = 100 * (tree_cpu_s(pids) - c0) / dt
                sched_cpu = 100 * (tree_cpu_s(sched) - s0) / dt
                print(f"idle sleep {sleep:g} s: idle Airflow uses {cpu:.1f} % of a core "
                      f"(scheduler {sched_cpu:.1f} %)", flush=True)
                tps = statistics.median(measure(f"idle sleep {sleep:g} s"))
                rows.append((sleep, cpu, sched_cpu, tps))
    print("\nidle sleep | Airflow CPU idle | scheduler | tokens/s | ratio to no Airflow")
    for sleep, cpu, sched_cpu, tps in rows:
        print(f"{sleep:>10g} | {cpu:>15.1f}% | {sched_cpu:>8.1f}% | {tps:>8.1f} | "
              f"{tps / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
