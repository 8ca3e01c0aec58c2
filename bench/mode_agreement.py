"""Do the isolation modes measure the same thing? Tokens/s and TTFT of the same
configurations under ``container``, ``process`` and ``warm``, side by side in one session.

No Airflow: each mode is driven the way its task drives it (``container``: a fresh
``llem run-experiment`` process, as the local runner starts it; ``process`` and ``warm``:
the run handed to an ``llem host`` of that mode over its socket), so the scheduler's noise
does not mix into the comparison. Rounds interleave the modes (the order rotates every
round) and each round runs every configuration once per mode. Per configuration and mode:
the mean over rounds with its Student-t 95 % interval; per mode against ``container``: the
difference of means as a per cent of the container mean, with Welch's 95 % interval
(``scipy.stats.ttest_ind(equal_var=False)``). A mode effect shows as an interval of the
difference that excludes 0; the intervals' widths are the noise this machine resolves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("container", "process", "warm")
CONFIGS = {"batch_size=1": {"batch_size": 1}, "batch_size=4": {"batch_size": 4}}
BASE = {"model": str(REPO / "models" / "tiny-llama"), "dtype": "float32", "device": "cpu",
        "max_input_tokens": 32, "max_output_tokens": 32, "min_output_tokens": 32,
        "warmup_runs": 1, "prompts": {"count": 8, "length": 32},
        # the window repeats the batch until it lasts 1 s: tokens/s over at least a second
        "energy": {"meter": "none", "min_window_s": 1.0}}


def spec_json(name: str, over: dict, k: int) -> str:
    from llem_core.analysis.results import RunSpec
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.campaign.grid import config_hash

    cfg = ExperimentConfig(**{**BASE, **over})
    return RunSpec(campaign="agreement", run_id="bench", name=name,
                   config_hash=config_hash(cfg), cycle=k, config=cfg).model_dump_json()


class Host:
    """An ``llem host`` of one mode, as host_start starts one for the local runner."""

    def __init__(self, root: Path, mode: str) -> None:
        self.sock = root / mode / "host.sock"
        self.log = root / f"host-{mode}.log"
        env = {**os.environ, "LLEM_ISOLATION": mode}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llem_core", "host", "--socket", str(self.sock),
             "--mode", mode], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            env=env, start_new_session=True)
        from llem_core.runtime.supervisor.client import alive

        deadline = time.monotonic() + 300
        while alive(self.sock) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"host {mode} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def run(self, spec: str, out: Path) -> None:
        from llem_core.runtime.supervisor.client import run_on_host

        lines: list[str] = []
        rc, reason = run_on_host(self.sock, spec, str(out), lines.append, 600)
        if rc != 0:
            raise SystemExit(f"hosted run failed ({reason}): {lines[-5:]}")

    def stop(self) -> None:
        from llem_core.runtime.supervisor.client import request

        request(self.sock, {"op": "shutdown"}, timeout_s=10)
        self.proc.wait(60)


def run_fresh(spec: str, out: Path) -> None:
    from llem_core.analysis.results import SPEC_ENV

    env = {**os.environ, SPEC_ENV: spec, "LLEM_ISOLATION": "container"}
    p = subprocess.run([sys.executable, "-m", "llem_core", "run-experiment", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"run-experiment failed: {p.stderr[-2000:]}")


def interval(xs: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    m = sum(xs) / len(xs)
    half = stats.t.ppf(0.975, len(xs) - 1) * stats.tstd(xs) / len(xs) ** 0.5
    return m, m - half, m + half


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    from scipy import stats

    from llem_core.analysis.results import read_result

    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hosts = {m: Host(root, m) for m in ("process", "warm")}
        try:
            for k in range(1, args.rounds + 1):
                order = MODES[k % 3:] + MODES[:k % 3]
                for mode in order:
                    for name, over in CONFIGS.items():
                        out = root / f"{mode}-{name}-{k}.json"
                        spec = spec_json(name, over, k)
                        (run_fresh(spec, out) if mode == "container"
                         else hosts[mode].run(spec, out))
                        r = read_result(out)
                        assert r.provenance.isolation == mode, r.provenance.isolation
                        v = values.setdefault((name, mode), {"tps": [], "ttft": []})
                        v["tps"].append(r.metrics.output_tokens_per_s)
                        v["ttft"].append(r.metrics.ttft_s.median * 1e3)
                print(f"round {k}/{args.rounds} done ({' '.join(order)})", flush=True)
        finally:
            for h in hosts.values():
                h.stop()

    n = args.rounds
    print(f"\nmean over {n} rounds with Student-t 95 % interval; vs container: difference of "
          "means in % of the container mean, Welch 95 % interval")
    rows = []
    for metric, unit in (("tps", "tok/s"), ("ttft", "ms TTFT")):
        for name in CONFIGS:
            base = values[(name, "container")][metric]
            parts = []
            for mode in MODES:
                xs = values[(name, mode)][metric]
                m, lo, hi = interval(xs)
                cell = f"{m:.1f} [{lo:.1f}, {hi:.1f}]"
                if mode != "container":
                    ci = stats.ttest_ind(xs, base, equal_var=False).confidence_interval(0.95)
                    mb = sum(base) / len(base)
                    cell += (f" {100 * (m - mb) / mb:+.1f} % "
                             f"[{100 * ci.low / mb:+.1f}, {100 * ci.high / mb:+.1f}]")
                parts.append(f"{mode} {cell}")
            line = f"{name:<13} {unit:<8} " + " | ".join(parts)
            rows.append(line)
            print(line)
    print("\nraw:", json.dumps({f"{a}/{b}": v for (a, b), v in values.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
