"""How long the report and history pages take over 10,000 result files (issue 25, Speed).

Builds synthetic results folders (realistic result documents: per-request lists of 32
requests, energy measured, a torch upgrade halfway through the history) and times, in one
process:

- ``build_report`` on one run folder, two shapes of 10,000 files: a long repeated
  campaign (20 configurations x 500 cycles) and a wide grid sweep (2,000 configurations x
  5 cycles; its charts take minutes, so it is timed once);
- ``history`` + ``history_html`` on one campaign folder of 100 daily runs x 20
  configurations x 5 cycles (10,000 files);
- the ``/llem/report`` and ``/llem/history`` routes of the plugin app (through FastAPI's
  test client, the auth dependency overridden), with the page cache off (every request
  renders) and on (a request whose files did not change is answered from the cache).

"cold" is the first call in a fresh process for imports already done (matplotlib, pandas,
scipy imported by a warm-up on a tiny folder), with the OS page cache warm: what an
api-server that has served any page before pays for a folder it has not rendered yet.
"warm" is the median of the next calls.

Usage: python bench/page_speed.py [--dir DIR] [--repeat 3] [--only pages|routes]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np

from llem_core.analysis.results import result_path
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash

REQUESTS = 32


def _base_doc() -> dict:
    from synthetic import synthetic_result

    from llem_core.analysis.results import PerRequest

    cfg = ExperimentConfig(model="org/m", name="base")
    r = synthetic_result("bench", "r", "base", cfg, config_hash(cfg), 1, j_per_token=0.2)
    r.metrics.per_request = PerRequest(output_tokens=[8] * REQUESTS, itl_count=[7] * REQUESTS,
                                       ttft_s=[0.01] * REQUESTS, e2e_s=[0.1] * REQUESTS)
    return r.model_dump(mode="json")


def _configs(n: int) -> list[tuple[str, ExperimentConfig, str]]:
    out = []
    for i in range(n):
        cfg = ExperimentConfig(model="org/m", name=f"cfg{i:04d}", batch_size=1 + i % 64,
                               max_output_tokens=64 + i // 64, seed=i)
        out.append((f"cfg{i:04d}", cfg, config_hash(cfg)))
    return out


def write_folder(root: Path, campaign: str, runs: int, configs: int, cycles: int,
                 seed: int = 0) -> Path:
    """``runs`` x ``configs`` x ``cycles`` result files under ``root``/``campaign``; the
    values are noisy around a per-configuration level, torch changes at the middle run."""
    rng = np.random.default_rng(seed)
    base = _base_doc()
    grid = _configs(configs)
    dumped = {h: cfg.model_dump(mode="json") for _, cfg, h in grid}
    for k in range(runs):
        run_id = f"scheduled__2026-{1 + k // 28:02d}-{1 + k % 28:02d}T02:00:00+00:00"
        started = f"2026-{1 + k // 28:02d}-{1 + k % 28:02d}T02:00:00"
        torch = "2.13.0" if k < runs // 2 else "2.14.1"
        for i, (name, _, h) in enumerate(grid):
            level = 0.1 + 0.001 * i
            for cycle in range(1, cycles + 1):
                j = float(level * rng.lognormal(0, 0.02))
                tps = float(1000 / level * rng.lognormal(0, 0.02))
                doc = json.loads(json.dumps(base))
                doc.update(campaign=campaign, run_id=run_id, name=name, config_hash=h,
                           cycle=cycle, position=i, config=dumped[h])
                doc["metrics"]["output_tokens_per_s"] = tps
                doc["metrics"]["per_request"]["ttft_s"] = [
                    round(float(x), 6) for x in rng.lognormal(-4.6, 0.1, REQUESTS)]
                e = doc["energy"]
                e.update(adjusted_j_per_output_token=j, adjusted_j=j * 8,
                         raw_j=j * 8 + 5, raw_j_per_output_token=(j * 8 + 5) / 8)
                doc["provenance"].update(started_at=started, finished_at=started)
                doc["provenance"]["libraries"]["torch"] = torch
                path = result_path(root, campaign, run_id, h, cycle)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(doc, indent=2))  # no fsync: a benchmark folder
    return root / campaign


def _time(fn, repeat: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    warm = [cold]
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm[1:] or warm)


def _row(name: str, cold: float, warm: float) -> None:
    print(f"| {name} | {cold:.2f} s | {warm:.2f} s |", flush=True)


def bench_core(base: Path, repeat: int) -> None:
    from llem_core.analysis.history import history
    from llem_core.analysis.history_report import history_html
    from llem_core.analysis.report import build_report

    tiny = write_folder(base / "tiny", "t", 2, 2, 3)  # imports and first-use costs
    build_report(tiny / os.listdir(tiny)[0])
    history_html(history(tiny), "t")
    print("| page | cold | warm (median) |\n|---|---|---|")
    for label, configs, cycles, reps in (
            ("report, 20 configurations x 500 cycles", 20, 500, repeat),
            ("report, 2,000 configurations x 5 cycles", 2000, 5, 0)):  # minutes: once
        root = write_folder(base / f"r{configs}", "bench", 1, configs, cycles)
        run = root / os.listdir(root)[0]
        cold, warm = _time(lambda run=run: build_report(run), reps)
        _row(label, cold, warm)
    root = write_folder(base / "hist", "bench", 100, 20, 5)
    cold, warm = _time(lambda: history_html(history(root, campaign="bench"), "h"), repeat)
    _row("history, 100 runs x 20 configurations x 5 cycles", cold, warm)


def bench_routes(base: Path, repeat: int) -> None:
    """The plugin's routes, page cache off then on, same files, same process."""
    from fastapi.testclient import TestClient

    results = base / "results"
    write_folder(results, "bench", 100, 20, 5)
    write_folder(results, "long", 1, 20, 500)
    from llem_airflow import plugin

    plugin.app.dependency_overrides = {}
    for dep in plugin.app.router.dependencies:
        plugin.app.dependency_overrides[dep.dependency] = lambda: None
    from llem_airflow.results_view import Campaign

    readable = [Campaign("bench", "llem_bench", results),  # no campaign file, no auth
                Campaign("long", "llem_long", results)]
    plugin.app.dependency_overrides[plugin.readable_campaigns] = lambda: readable
    client = TestClient(plugin.app)
    run = next(p for p in (results / "long").iterdir() if p.is_dir())
    print("| route | cache | first request | next requests (median) |\n|---|---|---|---|")
    for url, params in (("/report", {"run_dir": str(run)}),
                        ("/history", {"campaign": "bench"})):
        for on in (False, True):
            plugin.PAGE_CACHE.clear()
            plugin.PAGE_CACHE.enabled = on

            def get(url=url, params=params):
                resp = client.get(url, params=params)
                assert resp.status_code == 200, resp.text[:300]
            cold, warm = _time(get, repeat)
            print(f"| {url} | {'on' if on else 'off'} | {cold:.2f} s | {warm:.3f} s |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("pages", "routes"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.dir or Path(tmp)
        if args.only in (None, "pages"):
            bench_core(base, args.repeat)
        if args.only in (None, "routes"):
            bench_routes(base, args.repeat)


if __name__ == "__main__":
    main()
