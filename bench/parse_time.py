"""DAG parse time of a 10-configuration vs a 10,000-configuration campaign.

Each parse runs in a fresh `python -c` that loads dags/ with Airflow's DagBag, as the
dag-processor does; the time is DagBag's (both llem DAG files), Airflow's import
excluded. "cold" has no grid cache (the first parse of a new file version), "warm" is
every later parse (the dag-processor loop, every worker task).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PARSE = ("import time; from airflow.dag_processing.dagbag import DagBag; "
         "t=time.perf_counter(); b=DagBag(%r); "
         "assert not b.import_errors, b.import_errors; assert len(b.dags)==1; "
         "print(time.perf_counter()-t)")


def campaign(n_seeds: int, n_batch: int) -> dict:
    return {"campaign": f"size{n_seeds * n_batch}", "base": {"model": "org/model"},
            "grid": {"seed": list(range(n_seeds)), "batch_size": list(range(1, n_batch + 1))},
            "execution": {"cycles": 3}}


def parse_once(env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", PARSE % str(REPO / "dags")], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    rows = []
    for label, (a, b) in (("10 configs", (5, 2)), ("10,000 configs", (1000, 10))):
        with tempfile.TemporaryDirectory() as tmp:
            camps = Path(tmp) / "campaigns"
            camps.mkdir()
            (camps / "c.yaml").write_text(yaml.safe_dump(campaign(a, b)))
            env = {**os.environ, "LLEM_CAMPAIGNS_DIR": str(camps),
                   "LLEM_CACHE_DIR": str(Path(tmp) / "cache"),
                   "AIRFLOW_HOME": str(Path(tmp) / "home"),
                   "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
            t0 = time.perf_counter()
            cold = parse_once(env)
            warm = statistics.median(parse_once(env) for _ in range(5))
            rows.append((label, cold, warm, time.perf_counter() - t0))
    print(f"{'campaign':<16} {'cold parse s':>12} {'warm parse s':>12}")
    for label, cold, warm, _ in rows:
        print(f"{label:<16} {cold:>12.3f} {warm:>12.3f}")
    print(f"warm ratio 10,000 / 10 configs: {rows[1][2] / rows[0][2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
