"""False alarms and detection delay of ``llem history``'s change points, by simulation.

A daily campaign is simulated the way it runs: every day one run of ``--cycles`` cycles per
configuration is added, and the detection (``llem_core.analysis.regression.detect_series``, the
same call ``llem history`` makes) runs over the whole history so far. Every change point
reported on any day is an alarm (it would be notified once); a change point that was not
there the day before is a new alarm.

- **False alarms**: no change at all. New alarms over the month, per series and per
  campaign-month (``--configs`` x ``--metrics`` series), for a campaign's first month
  (history grows 1..30 runs) and for a later month (60 runs of history before it).
  Cycle CV 2/5/10 %, day-to-day SD 0 or half the cycle SD (a run's level moves by that
  much from day to day: temperature, reboots, neighbours).
- **Detection**: a step of 5/10/20 % at run 20 (first month) or 80 (later month); the
  share of months in which a change point at the step's run (+-1) is reported after at
  most 1, 2, 3, 5 runs of the new level, and the median delay.

Each value is a log-normal draw around the level (``exp(N(0, cv))``), each run's level
is shifted by ``exp(N(0, day_sd))``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

from llem_core.analysis.regression import DEFAULT_MAX_PVALUE, DEFAULT_WINDOW, detect_series


def month(rng: np.random.Generator, runs: int, cycles: int, cv: float, day_sd: float,
          step_at: int | None, step: float) -> list[np.ndarray]:
    """Cycles of each run of one series."""
    out = []
    for r in range(runs):
        level = (1 + step) if step_at is not None and r >= step_at else 1.0
        day = np.exp(rng.normal(0, day_sd)) if day_sd else 1.0
        out.append(level * day * np.exp(rng.normal(0, cv, cycles)))
    return out


def alarms_over_month(cycles: list[np.ndarray], first_day: int, window: int,
                      max_pvalue: float) -> dict[int, int]:
    """{change point index: the day (number of runs) it was first reported}."""
    first_seen: dict[int, int] = {}
    seen_before: set[int] = set()
    for day in range(first_day, len(cycles) + 1):
        found = {c.index for c in detect_series(cycles[:day], positive=True, window=window,
                                                  max_pvalue=max_pvalue)}
        if day == first_day:
            seen_before = found
        for i in found - seen_before:
            first_seen.setdefault(i, day)
    return first_seen


def false_alarms(args: argparse.Namespace, rng: np.random.Generator) -> None:
    series = args.configs * args.metrics
    print(f"\n### False alarms: no change ({args.fa_months} simulated months per row; "
          f"{args.configs} configurations x {args.metrics} metrics = {series} series)\n")
    print("| history before the month | cycle CV | day-to-day SD | new alarms per series-month "
          "| per campaign-month | months with any alarm in a series |")
    print("|---|---|---|---|---|---|")
    for before in (0, 60):
        for cv in args.cvs:
            for day_sd in (0.0, cv / 2):
                counts = []
                for _ in range(args.fa_months):
                    cyc = month(rng, before + 30, args.cycles, cv, day_sd, None, 0.0)
                    first = max(before, 2)
                    counts.append(len(alarms_over_month(cyc, first, args.window,
                                                        args.max_pvalue)))
                c = np.array(counts)
                print(f"| {before} runs | {cv:.0%} | {day_sd:.1%} | {c.mean():.4f} | "
                      f"{c.mean() * series:.2f} | {np.mean(c > 0):.1%} |", flush=True)


def detection(args: argparse.Namespace, rng: np.random.Generator) -> None:
    print(f"\n### Detection of a step ({args.months} simulated months per row)\n")
    print("Day-to-day SD: `cycle` = half the cycle SD (the issue's goal, as written); "
          "`mean` = half the SD of a run's mean over its cycles.\n")
    print("| history before the month | day-to-day SD | step | cycle CV | found after 1 run "
          "| 2 runs | 3 runs | 5 runs | by month end | median delay (runs) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (before, at), rule in itertools.product(((0, 20), (60, 80)), args.day_sd_rules):
        for step in args.steps:
            for cv in args.cvs:
                day_sd = cv / 2 if rule == "cycle" else cv / 2 / np.sqrt(args.cycles)
                delays = []
                for _ in range(args.months):
                    cyc = month(rng, before + 30, args.cycles, cv, day_sd, at, step)
                    seen = alarms_over_month(cyc, max(before, 2), args.window,
                                             args.max_pvalue)
                    days = [d for i, d in seen.items() if abs(i - at) <= 1]
                    delays.append(min(days) - at if days else np.inf)
                d = np.array(delays)
                cells = " | ".join(f"{np.mean(d <= k):.0%}" for k in (1, 2, 3, 5))
                median = np.median(d)
                print(f"| {before} runs | {rule} ({day_sd:.2%}) | {step:+.0%} | {cv:.0%} | "
                      f"{cells} | "
                      f"{np.mean(np.isfinite(d)):.0%} | "
                      f"{'never' if not np.isfinite(median) else f'{median:.0f}'} |",
                      flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--metrics", type=int, default=6)
    ap.add_argument("--cvs", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    ap.add_argument("--steps", type=float, nargs="+", default=[0.05, 0.10, 0.20])
    ap.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    ap.add_argument("--max-pvalue", type=float, default=DEFAULT_MAX_PVALUE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("false-alarms", "detection"))
    ap.add_argument("--fa-months", type=int, default=2000,
                    help="simulated months per false-alarm row (false alarms are rare)")
    ap.add_argument("--day-sd-rules", nargs="+", default=["cycle", "mean"],
                    choices=("cycle", "mean"))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"window {args.window}, max p {args.max_pvalue:g}, {args.cycles} cycles a run, "
          "daily runs, detection over the whole history every day")
    if args.only != "detection":
        false_alarms(args, rng)
    if args.only != "false-alarms":
        detection(args, rng)
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
