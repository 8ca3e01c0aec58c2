"""Write tests/data/otava_reference.json: Apache Otava's change points on fixed series.

Run with an interpreter that has ``apache-otava`` (it pins its own numpy, so use a
separate virtual environment: ``python -m venv /tmp/otava && /tmp/otava/bin/pip install
apache-otava``); ``tests/test_changepoints.py`` checks llem's implementation against the
file. The series are made here from a fixed seed: steps, ramps, outliers, noise only,
constant stretches, short series.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from otava.analysis import compute_change_points

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "otava_reference.json"
SETTINGS = ((50, 0.001), (30, 0.01), (20, 0.05), (8, 0.001))


def series() -> list[list[float]]:
    rng = np.random.default_rng(20261206)
    out: list[np.ndarray] = []
    for n in (6, 12, 30, 60, 150):
        out.append(rng.normal(100, 5, n))  # noise only
    for n, at, step in ((30, 20, 0.10), (40, 10, -0.2), (60, 30, 0.05), (100, 50, 0.3),
                        (25, 22, 0.15)):
        x = rng.normal(100, 5, n)
        x[at:] *= 1 + step
        out.append(x)
    x = rng.normal(10, 1, 120)
    x[30:] += 3
    x[70:] -= 5
    x[100:] += 2
    out.append(x)  # three steps
    out.append(np.linspace(50, 80, 40) + rng.normal(0, 1, 40))  # a ramp
    x = rng.normal(5, 0.2, 50)
    x[[10, 25, 40]] += 4
    out.append(x)  # outliers
    out.append(np.r_[np.full(10, 3.0), np.full(10, 4.0), rng.normal(4, 0.1, 10)])
    out.append(rng.lognormal(0, 0.3, 80))
    return [list(map(float, s)) for s in out]


def main() -> int:
    cases = []
    for s in series():
        for window, max_p in SETTINGS:
            cps, _ = compute_change_points(list(s), window_len=window, max_pvalue=max_p)
            cases.append({"series": s, "window": window, "max_pvalue": max_p,
                          "indices": [int(c.index) for c in cps]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"otava": "apache-otava", "cases": cases}) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
