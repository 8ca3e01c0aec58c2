"""The `llem` command: validate, plan, run-experiment, aggregate, report, make-tiny-model."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llem_core.analysis.results import SPEC_ENV
from llem_core.campaign.config import Ordering
from llem_core.campaign.loading import CampaignFileError, pydantic_errors

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _file_error(exc: CampaignFileError) -> int:
    for line in exc.lines():
        err.print(line, markup=False, highlight=False)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from llem_core.campaign.discovery import name_conflict
    from llem_core.campaign.planning import load_and_place

    try:
        loaded, report = load_and_place(args.campaign)
        conflict = name_conflict(args.campaign)  # another file of its folder has its name
        if conflict is not None:
            raise conflict
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
    t = Table(title=escape(f"{args.campaign}: campaign {cfg.campaign!r} (DAG {cfg.dag_id})"))
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
            ft.add_row(escape(f.name), escape("; ".join(f.reasons)))
        out.print(ft)
    for d in report.duplicates:
        out.print("[yellow]duplicate[/]: "
                  + escape(f"{d.name} ({d.source}) equals {d.duplicate_of}"))
    for w in warnings:
        out.print(f"[yellow]warning[/]: {escape(f'{args.campaign}: {w}')}", highlight=False)
    return 0


def plan_params(args: argparse.Namespace) -> dict[str, Any]:
    """The trigger params a `llem plan` command line gives; what it leaves out takes the
    campaign's defaults, as an empty trigger form does."""
    given = {"cycles": args.cycles, "ordering": args.ordering, "seed": args.seed,
             "configs": args.config, "max_output_tokens": args.max_output_tokens,
             "warmup_runs": args.warmup_runs, "dry_run": args.dry_run or None}
    return {k: v for k, v in given.items() if v is not None}


def cmd_plan(args: argparse.Namespace) -> int:
    """The DAG's planner (:func:`llem_core.campaign.planning.plan_run`) on the same params: the
    listing is plan.json's, and a param the plan task refuses is refused here with its
    message."""
    from llem_core.campaign.planning import PlanError, load_and_place, plan_run

    try:
        loaded, report = load_and_place(args.campaign)
    except CampaignFileError as exc:
        return _file_error(exc)
    try:
        plan = plan_run(loaded.config, plan_params(args), args.run_id, report)
    except PlanError as exc:
        err.print(f"{args.campaign}: {exc}", markup=False, highlight=False)
        return 1
    listing = plan.listing()
    if args.json:
        _print_json(listing)
        return 0
    dry = " (dry run: nothing would be measured)" if plan.dry_run else ""
    t = Table(title=escape(f"{plan.campaign}: {len(plan.runs)} runs, {plan.cycles} cycles, "
                           f"{plan.ordering}, seed {plan.seed}{dry}"))
    columns = ("position", "cycle", "name", "config_hash")
    for col in columns:
        t.add_column(col)
    for r in listing["runs"]:
        t.add_row(*(escape(str(r[c])) for c in columns))
    out.print(t)
    return 0


def _read_spec(path: str | None):
    """The RunSpec of a spec file or of $LLEM_SPEC_JSON; a bare ExperimentConfig is run as
    cycle 1 of no campaign. Any problem is a ValueError with a one-line reason."""
    from llem_core.analysis.results import RunSpec

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
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a spec is a JSON object, got {type(data).__name__}")
    bare = "config" not in data
    try:
        return RunSpec.model_validate({"config": data} if bare else data)
    except ValidationError as exc:
        reasons = "; ".join(f"{e.path.removeprefix('config.') if bare else e.path}: {e.reason}"
                            for e in pydantic_errors(exc, RunSpec))
        raise ValueError(f"{source}: {reasons}") from None


def check_out_path(value: str) -> Path:
    """Fail before measuring, not after: the result path must be writable as a file."""
    if not value.strip():
        raise ValueError("--out: empty path")
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"--out {value}: is a folder, not a file path")
    if path.exists() and not path.is_file():
        raise ValueError(f"--out {value}: exists and is not a regular file (a device?)")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".llem-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--out {value}: folder {folder} is not writable: "
                         f"{exc.strerror or exc}") from None
    return path


def cmd_run_experiment(args: argparse.Namespace) -> int:
    from llem_core.analysis.results import result_path

    try:
        spec = _read_spec(args.spec)
    except (OSError, ValueError) as exc:
        err.print(f"error: bad spec: {str(exc).splitlines()[0]}", markup=False, highlight=False)
        return 2
    try:
        out_path = check_out_path(args.out) if args.out is not None else (
            check_out_path(str(result_path(args.results_dir, spec.campaign, spec.run_id,
                                           spec.config_hash, spec.cycle)))
            if args.results_dir else None)
    except ValueError as exc:
        err.print(f"error: {str(exc).splitlines()[0]}", markup=False, highlight=False)
        return 2
    from llem_core.runtime.measure import ExperimentError, run

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
    from llem_core.analysis.stats import CIOptions

    return CIOptions(confidence=args.confidence, method=args.method,
                     n_resamples=args.resamples, seed=args.seed)


def cmd_aggregate(args: argparse.Namespace) -> int:
    from llem_core.analysis.aggregate import aggregate_dir
    from llem_core.analysis.summary_md import finding_line

    if not Path(args.results_dir).is_dir():
        err.print(f"error: {args.results_dir}: no such folder", markup=False)
        return 1
    group_by = [g.strip() for g in args.group_by.split(",")] if args.group_by else None
    try:
        opts = _ci_options(args)
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        return 1
    digest = aggregate_dir(args.results_dir, group_by=group_by, opts=opts,
                           compare_to=args.compare_to)
    if args.compare_to and digest["reference_error"]:
        err.print(f"error: {digest['reference_error']}", markup=False, highlight=False)
        return 1
    if args.json:
        _print_json(digest)
        return 0 if digest["results"] else 1
    if not digest["results"]:
        err.print(f"error: no result files under {args.results_dir}", markup=False)
        return 1
    planned = digest["planned"]
    from llem_core.analysis.console_table import aggregate_table

    table, caveats = aggregate_table(digest, f"{args.results_dir}: estimates with "
                                             f"{args.confidence:.0%} confidence intervals")
    out.print(table)
    for c in caveats:
        out.print(c, highlight=False, markup=False)
    out.print(f"measured {digest['measured']} results; planned "
              f"{planned if planned is not None else 'unknown (no plan.json)'}",
              highlight=False)
    for m in digest["missing"]:
        out.print("[red]missing[/]: " + escape(f"{m['name']} (cycle {m['cycle']}, "
                  f"{m['config_hash']}): {m['reason']}"), highlight=False)
    if digest["reference"]:
        out.print(f"reference: {digest['reference']['label']} "
                  f"({digest['reference']['rule']})", highlight=False, markup=False)
    for c in digest["comparison"]:
        if c["finding"]:  # >= 2 pairs and the interval excludes 0
            out.print(finding_line(c), highlight=False, markup=False)
    for p in digest["problems"]:
        out.print("[red]problem[/]: " + escape(f"{p['path']}: {p['reason']}"), highlight=False)
    for n in digest["notes"]:
        out.print("[yellow]note[/]: " + escape(str(n)), highlight=False)
    out.print(f"wrote {', '.join(v for v in digest['files'].values() if v)}", markup=False)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llem_core.analysis.report import write_report

    if not Path(args.results_dir).is_dir():
        err.print(f"error: {args.results_dir}: no such folder", markup=False)
        return 1
    try:
        path = write_report(args.results_dir, args.output, args.compare_to, _ci_options(args))
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        return 1
    out.print(f"report written to {path}", markup=False)
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    from llem_core.runtime.supervisor.server import main as host_main

    return host_main(args.socket, args.mode, args.idle_exit_s)


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from llem_core.runtime.tinymodel import build_tiny_model

    path = build_tiny_model(args.out, seed=args.seed, arch=args.arch, dtype=args.dtype,
                            device=args.device)
    out.print(f"tiny model written to {path}", markup=False)
    if args.gguf:
        from llem_core.runtime.tinymodel import to_gguf

        gguf_dtype = "float32" if args.dtype == "float32" else "float16"
        out.print(f"GGUF ({gguf_dtype}) written to {to_gguf(path, args.gguf, gguf_dtype)}",
                  markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="validate a campaign file and summarise its grid")
    v.add_argument("campaign")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plan", help="print the ordered runs of a campaign, as the DAG's "
                        "plan task would plan them for these trigger params")
    pl.add_argument("campaign")
    pl.add_argument("--cycles", type=int)
    # no argparse choices: the planner's own checks give the DAG's message
    pl.add_argument("--ordering", help=f"one of {', '.join(o.value for o in Ordering)}")
    pl.add_argument("--seed", type=int)
    pl.add_argument("--config", action="append",
                    help="only this configuration (repeatable; names may hold commas)")
    pl.add_argument("--max-output-tokens", type=int)
    pl.add_argument("--warmup-runs", type=int)
    pl.add_argument("--dry-run", action="store_true")
    pl.add_argument("--run-id", default="llem-plan", help="run id of the result paths shown")
    pl.add_argument("--json", action="store_true", help="the listing plan.json would hold")
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
        a.add_argument("--compare-to", "--reference", dest="compare_to",
                       help="reference configuration: label, name or config hash "
                            "(default: plan.json's compare_to, else alphabetically first)")
        a.add_argument("--confidence", type=float, default=0.95)
        a.add_argument("--method", default="t", choices=["t", "BCa", "percentile"],
                       help="interval of the mean (default: Student-t)")
        a.add_argument("--resamples", type=int, default=9999, help="bootstrap methods only")
        a.add_argument("--seed", type=int, default=0)
        if name == "aggregate":
            a.add_argument("--group-by", help="comma-separated config fields")
            a.add_argument("--json", action="store_true")
        else:
            a.add_argument("-o", "--output", default="report.html")
        a.set_defaults(func=fn)

    from llem_core.cli_history import add_parser as add_history

    add_history(sub)

    h = sub.add_parser("host", help="serve experiments from a warm host (isolation "
                       "process or warm; started by the DAG's setup task)")
    h.add_argument("--socket", required=True, help="Unix socket path to listen on")
    h.add_argument("--mode", choices=["process", "warm"], default="process")
    h.add_argument("--idle-exit-s", type=float, default=3600.0,
                   help="exit after this long without a request")
    h.set_defaults(func=cmd_host)

    t = sub.add_parser("make-tiny-model", help="build a tiny random-weight model locally")
    t.add_argument("out")
    t.add_argument("--seed", type=int, default=0)
    from llem_core.runtime.tinymodel import ARCHS

    t.add_argument("--arch", choices=sorted(ARCHS), default="tiny",
                   help="architecture (vllm-tiny: head_dim 32 for vLLM's CPU attention)")
    t.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    t.add_argument("--device", default="cpu", help="where weights are initialised (cuda)")
    t.add_argument("--gguf", metavar="FILE", help="also convert it into this GGUF file, for "
                   "backend llamacpp (float32, else float16)")
    t.set_defaults(func=cmd_make_tiny_model)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def entry() -> None:
    """The `llem` command. `run-experiment` ends with ``os._exit`` once its result is durably
    written (fsync of the file and its folder) and its output flushed: the interpreter's
    shutdown after torch and transformers takes about a second and does nothing a finished
    experiment needs. So does `host` once its workers are reaped and its socket removed
    (the run's teardown waits for it to be gone). Both processes exist only for their
    experiments, so they may pause the collector and freeze what their imports build
    (:mod:`llem_core.runtime.experiment.import_gc`); ``main()`` called from Python does not."""
    own = len(sys.argv) > 1 and sys.argv[1] in ("run-experiment", "host")
    if own:
        from llem_core.runtime.experiment.import_gc import own_process

        own_process()
    rc = main()
    if own:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
