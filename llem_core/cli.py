"""The `llem` command: validate, plan, run-experiment, aggregate, report, make-tiny-model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llem_core.campaign_file import CampaignFileError, pydantic_errors
from llem_core.config import Ordering
from llem_core.results import SPEC_ENV

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _file_error(exc: CampaignFileError) -> int:
    for line in exc.lines():
        err.print(line, markup=False, highlight=False)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from llem_core.grid import load_and_expand

    try:
        loaded, report = load_and_expand(args.campaign)
    except CampaignFileError as exc:
        if args.json:
            _print_json({"valid_file": False, "errors": [
                {"file": exc.file, "path": e.path, "reason": e.reason} for e in exc.errors]})
        return _file_error(exc)
    # File-level warnings (a local model folder missing here) name their field already.
    warnings = loaded.warnings + report.warnings
    if args.json:
        _print_json({
            "valid_file": True,
            "campaign": report.campaign,
            "dag_id": loaded.config.dag_id,
            "generated": report.generated,
            "valid": report.valid,
            "filtered": [f.model_dump() for f in report.filtered],
            "duplicates": [d.model_dump() for d in report.duplicates],
            "warnings": warnings,
            "configs": [{"name": s.name, "config_hash": s.config_hash} for s in report.specs],
        })
        return 0
    cfg = loaded.config
    t = Table(title=f"{args.campaign}: campaign {cfg.campaign!r} (DAG {cfg.dag_id})")
    t.add_column("generated", justify="right")
    t.add_column("valid", justify="right")
    t.add_column("filtered", justify="right")
    t.add_column("duplicates", justify="right")
    t.add_column("runs", justify="right")
    t.add_row(str(report.generated), str(report.valid), str(len(report.filtered)),
              str(len(report.duplicates)), str(report.valid * cfg.execution.cycles))
    out.print(t)
    if report.filtered:
        ft = Table(title="filtered combinations")
        ft.add_column("configuration")
        ft.add_column("reason")
        for f in report.filtered:
            ft.add_row(f.name, "; ".join(f.reasons))
        out.print(ft)
    for d in report.duplicates:
        out.print(f"[yellow]duplicate[/]: {d.name} ({d.source}) equals {d.duplicate_of}")
    for w in warnings:
        out.print(f"[yellow]warning[/]: {escape(f'{args.campaign}: {w}')}", highlight=False)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from llem_core import plan
    from llem_core.grid import load_and_expand

    try:
        loaded, report = load_and_expand(args.campaign)
    except CampaignFileError as exc:
        return _file_error(exc)
    ex = loaded.config.execution
    cycles = args.cycles if args.cycles is not None else ex.cycles
    if not 1 <= cycles <= 100:
        err.print(f"{args.campaign}: --cycles: must be between 1 and 100, got {cycles}")
        return 1
    runs = plan.build(report.specs, cycles, args.ordering or ex.ordering,
                      args.seed if args.seed is not None else ex.seed)
    rows = [{"position": r.position, "cycle": r.cycle, "config_name": r.spec.name,
             "config_hash": r.spec.config_hash} for r in runs]
    if args.json:
        _print_json(rows)
        return 0
    t = Table(title=f"{loaded.config.campaign}: {len(rows)} runs, {cycles} cycles, "
                    f"{args.ordering or ex.ordering}")
    for col in ("position", "cycle", "config_name", "config_hash"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("position", "cycle", "config_name", "config_hash")))
    out.print(t)
    return 0


def _read_spec(path: str | None):
    from llem_core.results import RunSpec

    if path:
        source = path
        text = Path(path).read_text(encoding="utf-8")
    elif os.environ.get(SPEC_ENV):
        source, text = f"${SPEC_ENV}", os.environ[SPEC_ENV]
    else:
        raise ValueError(f"give --spec FILE or set {SPEC_ENV}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: invalid JSON: {exc}") from None
    from llem_core.config import ExperimentConfig
    from llem_core.grid import config_hash, derived_name

    try:
        if isinstance(data, dict) and "config" not in data:
            # A bare ExperimentConfig: run it as cycle 1 of no campaign.
            cfg = ExperimentConfig.model_validate(data)
            data = {"name": cfg.name or derived_name({}), "config_hash": config_hash(cfg),
                    "config": cfg.model_dump(mode="json")}
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        root = RunSpec if "config" in data else ExperimentConfig
        reasons = "; ".join(f"{e.path}: {e.reason}" for e in pydantic_errors(exc, root))
        raise ValueError(f"{source}: {reasons}") from None


def cmd_run_experiment(args: argparse.Namespace) -> int:
    from llem_core.results import result_path

    try:
        spec = _read_spec(args.spec)
    except (OSError, ValueError) as exc:
        err.print(f"error: bad spec: {str(exc).splitlines()[0]}", markup=False, highlight=False)
        return 2
    from llem_core.runner import ExperimentError, run

    out_path = Path(args.out) if args.out else (
        result_path(args.results_dir, spec.campaign, spec.run_id, spec.config_hash, spec.cycle)
        if args.results_dir else None)
    try:
        result = run(spec, out_path, log=lambda m: err.print(f"[llem] {m}", markup=False))
    except ExperimentError as exc:
        err.print(f"error: {str(exc).splitlines()[0]}", markup=False, highlight=False)
        return 1
    except MemoryError:
        err.print("error: out of memory (host)", markup=False)
        return 1
    sys.stdout.write(json.dumps(result.summary(str(out_path) if out_path else None),
                                separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


def _ci_options(args: argparse.Namespace):
    from llem_core.stats import CIOptions

    return CIOptions(confidence=args.confidence, n_resamples=args.resamples, seed=args.seed)


def cmd_aggregate(args: argparse.Namespace) -> int:
    from llem_core.aggregate import aggregate_dir
    from llem_core.results import load_results, to_frame
    from llem_core.stats import compare

    if not Path(args.results_dir).is_dir():
        err.print(f"error: {args.results_dir}: no such folder")
        return 1
    group_by = [g.strip() for g in args.group_by.split(",")] if args.group_by else None
    digest = aggregate_dir(args.results_dir, group_by=group_by, opts=_ci_options(args))
    results, _ = load_results(args.results_dir)
    comparison = []
    if results:
        try:
            cmp_df = compare(to_frame(results), args.reference, opts=_ci_options(args))
            comparison = json.loads(cmp_df.to_json(orient="records"))
        except ValueError as exc:
            err.print(f"error: {exc}")
            return 1
    if args.json:
        _print_json({**digest, "comparison": comparison})
        return 0 if digest["results"] else 1
    if not digest["results"]:
        err.print(f"error: no result files under {args.results_dir}")
        return 1
    key = next(iter(digest["table"][0])) if digest["table"] else "config_name"
    t = Table(title=f"{args.results_dir}: means with {args.confidence:.0%} bootstrap CI")
    metrics = ["tokens_per_s", "j_per_token_adjusted", "ttft_p50_s", "itl_p50_s"]
    t.add_column(key)
    t.add_column("n", justify="right")
    for m in metrics:
        t.add_column(m, justify="right")
    for row in digest["table"]:
        cells = []
        for m in metrics:
            v = row.get(m) or {}
            if v.get("mean") is None:
                cells.append("—")
            elif v.get("ci_low") is None:
                cells.append(f"{v['mean']:.4g} (no CI)")
            else:
                cells.append(f"{v['mean']:.4g} [{v['ci_low']:.4g}, {v['ci_high']:.4g}]")
        t.add_row(str(row[key]), str(row["n"]), *cells)
    out.print(t)
    for c in comparison:
        if c["excludes_zero"] and c["metric"] in ("tokens_per_s", "j_per_token_adjusted"):
            out.print(f"{c['config_name']} vs {c['reference']}: {c['metric']} ratio "
                      f"{c['ratio']:.3f} [{c['ratio_ci_low']:.3f}, {c['ratio_ci_high']:.3f}]")
    for p in digest["problems"]:
        out.print(f"[red]unreadable[/]: {p['path']}: {p['reason']}", highlight=False)
    for n in digest["notes"]:
        out.print(f"[yellow]note[/]: {n}", highlight=False)
    out.print(f"wrote {', '.join(v for v in digest['files'].values() if v)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llem_core.report import write_report

    if not Path(args.results_dir).is_dir():
        err.print(f"error: {args.results_dir}: no such folder")
        return 1
    try:
        path = write_report(args.results_dir, args.output, args.reference, _ci_options(args))
    except ValueError as exc:
        err.print(f"error: {exc}")
        return 1
    out.print(f"report written to {path}")
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from llem_core.tinymodel import build_tiny_model

    path = build_tiny_model(args.out, seed=args.seed)
    out.print(f"tiny model written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate a campaign file and summarise its grid")
    v.add_argument("campaign")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plan", help="print the ordered runs of a campaign")
    pl.add_argument("campaign")
    pl.add_argument("--cycles", type=int)
    pl.add_argument("--ordering", choices=[o.value for o in Ordering])
    pl.add_argument("--seed", type=int)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    r = sub.add_parser("run-experiment", help="run and measure one experiment")
    r.add_argument("--spec", help=f"spec JSON file (default: ${SPEC_ENV})")
    r.add_argument("--out", help="result JSON path")
    r.add_argument("--results-dir", help="write under <dir>/<campaign>/<run>/<hash>/cycle_<k>.json")
    r.set_defaults(func=cmd_run_experiment)

    for name, fn, helptext in (("aggregate", cmd_aggregate, "CI table of a results folder"),
                               ("report", cmd_report, "self-contained HTML report")):
        a = sub.add_parser(name, help=helptext)
        a.add_argument("results_dir")
        a.add_argument("--reference", help="configuration compared against (default: first)")
        a.add_argument("--confidence", type=float, default=0.95)
        a.add_argument("--resamples", type=int, default=9999)
        a.add_argument("--seed", type=int, default=0)
        if name == "aggregate":
            a.add_argument("--group-by", help="comma-separated config fields")
            a.add_argument("--json", action="store_true")
        else:
            a.add_argument("-o", "--output", default="report.html")
        a.set_defaults(func=fn)

    t = sub.add_parser("make-tiny-model", help="build a tiny random-weight model locally")
    t.add_argument("out")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_make_tiny_model)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
