"""What the cyclic garbage collector costs an experiment's import, side by side in one run.

Each round starts fresh interpreters that import what a ``container`` experiment imports
(torch, transformers, the Auto classes and ``modeling_llama``; the host's ``PRELOAD``) in
three ways, in an order that rotates every round:

- ``collecting``: the collector runs, as before ``llem_core.runtime.experiment.import_gc``;
- ``paused``: collector off during the import, then ``gc.freeze()`` and on again (llem);
- ``paused+collect``: as ``paused`` but with one ``gc.collect()`` before the freeze, which
  counts the garbage cycles the import leaves (what ``paused`` freezes for good) and times
  what a full collection of the fresh heap would cost.

``--image`` runs the interpreters in that experiment image (``docker run --network none``),
as the Docker runner does; without it, with this machine's Python. Prints per variant the
min / median seconds and the median ratio against ``collecting``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("collecting", "paused", "paused+collect")
PROBE = """
import gc, json, sys, time, importlib
variant = sys.argv[1]
t0 = time.perf_counter()
if variant != "collecting":
    gc.disable()
for name in ("torch", "transformers", "transformers.models.auto.modeling_auto",
             "transformers.models.llama.modeling_llama", "transformers.generation"):
    importlib.import_module(name)
garbage = collect_s = None
if variant == "paused+collect":
    tc = time.perf_counter()
    garbage = gc.collect()
    collect_s = time.perf_counter() - tc
if variant != "collecting":
    gc.freeze()
    gc.enable()
t1 = time.perf_counter()
print(json.dumps({"s": t1 - t0, "garbage": garbage, "collect_s": collect_s,
                  "frozen": gc.get_freeze_count()}), flush=True)
import os; os._exit(0)
"""


def one(variant: str, image: str | None) -> dict:
    if image:
        cmd = ["docker", "run", "--rm", "--network", "none", image, "python3", "-c", PROBE,
               variant]
    else:
        cmd = [sys.executable, "-c", PROBE, variant]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"{variant}: {p.stderr.strip()[-500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", help="run in this experiment image (e.g. llem-experiment:test)")
    args = ap.parse_args()
    got: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % 3:] + VARIANTS[:r % 3]
        for v in order:
            got[v].append(one(v, args.image))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v} {got[v][-1]['s']:.2f} s" for v in VARIANTS), flush=True)
    where = (f"image {args.image}" if args.image
             else f"this machine's Python {sys.version.split()[0]}")
    print(f"\nimport of torch + transformers + modeling_llama, {args.rounds} rounds, {where}")
    base = [x["s"] for x in got["collecting"]]
    for v in VARIANTS:
        s = [x["s"] for x in got[v]]
        ratio = statistics.median(a / b for a, b in zip(s, base, strict=True))
        print(f"  {v:15s} min {min(s):.2f} s  median {statistics.median(s):.2f} s  "
              f"median ratio to collecting {ratio:.2f}")
    pc = got["paused+collect"]
    print(f"  garbage cycles the paused import leaves (frozen for good by llem): "
          f"{min(x['garbage'] for x in pc)}-{max(x['garbage'] for x in pc)} objects; "
          f"one full collection of the fresh heap: "
          f"{statistics.median(x['collect_s'] for x in pc):.2f} s (median); "
          f"objects frozen: {statistics.median(x['frozen'] for x in got['paused']):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
