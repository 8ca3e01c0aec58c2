"""The main job: run the example campaign end to end on a local Airflow.

Builds the tiny model if needed, starts Airflow (SQLite, LocalExecutor) as processes,
triggers ``llem_example-cpu`` through the REST API with params, shows progress, then
prints the per-configuration confidence-interval table and the results folder. Uses
Docker when a daemon is reachable and the experiment image exists (or can be built),
the local subprocess runner otherwise, and says which.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

from llem_core import env_names

REPO = Path(__file__).resolve().parents[1]
console = Console()


def docker_usable(image: str, build: bool) -> tuple[bool, str]:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # any failure means: no usable daemon
        return False, f"no Docker daemon reachable ({type(exc).__name__})"
    if not build:
        try:
            client.images.get(image)
            return True, f"Docker daemon reachable, image {image} present"
        except Exception:
            return False, f"image {image} missing"
    # The build script is cached by a content hash: a no-op when the image is current.
    r = subprocess.run([str(REPO / "scripts" / "build_test_image.sh"), image],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"image {image} could not be built: {r.stdout[-500:]} {r.stderr[-500:]}"
    return True, f"Docker daemon reachable, image {image} up to date"


def engine_python(src: Path) -> Path | None:
    """The vLLM environment's interpreter a campaign names (kept a symlink: it is a venv's)."""
    python = (yaml.safe_load(src.read_text()).get("base", {}).get("vllm") or {}).get("python")
    if not python:
        return None
    return Path(os.path.normpath(src.parent.resolve() / python)) if "/" in python \
        else Path(python)


def ensure_model(src: Path) -> None:
    """Build the campaign's local model if missing; the folder name picks the architecture
    (models/vllm-tiny: head_dim 32 for vLLM; anything else: the tiny default)."""
    model = yaml.safe_load(src.read_text()).get("base", {}).get("model", "")
    if not model.startswith(("./", "../", "/")):
        return
    path = (src.parent / model).resolve()
    if (path / "config.json").exists():
        return
    from llem_core.runtime.tinymodel import ARCHS, build_tiny_model

    arch = path.name if path.name in ARCHS else "tiny"
    console.print(f"building the {arch} model at {path}")
    build_tiny_model(path, arch=arch)


def prepare_campaign(src: Path, work: Path, runner: str, image: str) -> Path:
    data = yaml.safe_load(src.read_text())
    base = data.setdefault("base", {})
    model = base.get("model", "")
    if model.startswith(("./", "../")):
        base["model"] = str((src.parent / model).resolve())
    python = engine_python(src)
    if python is not None:
        base["vllm"]["python"] = str(python)
    data["results_dir"] = str((REPO / "results").resolve())
    data["runner"] = {"type": "docker", "image": image} if runner == "docker" \
        else {"type": "local"}
    out = work / "campaigns" / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def print_table(digest: dict) -> None:
    from llem_core.analysis.console_table import aggregate_table

    table, caveats = aggregate_table(digest, "per-configuration estimates with 95% CI "
                                             "(n = cycles)")
    console.print(table)
    for c in caveats:
        console.print(c, markup=False, highlight=False)
    for m in digest.get("missing", []):
        console.print("[red]missing[/]: " + escape(f"{m['name']} cycle {m['cycle']}: "
                                                   f"{m['reason']}"))
    for n in digest.get("notes", []):
        console.print("[yellow]note[/]: " + escape(str(n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--campaign", type=Path, default=REPO / "campaigns" / "example-cpu.yaml")
    ap.add_argument("--runner", choices=["auto", "docker", "local"], default="auto")
    ap.add_argument("--image", default="llem-experiment:test")
    ap.add_argument("--work", type=Path, default=REPO / ".llem")
    ap.add_argument("--port", type=int, default=28080)
    ap.add_argument("--cycles", type=int)
    args = ap.parse_args()

    ensure_model(args.campaign)
    runner = args.runner
    python = engine_python(args.campaign)
    extra_env: dict[str, str] = {}
    if python is not None:
        if not python.exists():
            console.print(f"[red]the campaign's vLLM environment {python} is missing[/]: "
                          "make setup-vllm")
            return 1
        # The engine runs in its own environment on this machine: the local runner, and
        # the deployment's allow-list names that interpreter (this script is the deployment).
        extra_env[env_names.ALLOWED_PYTHONS] = str(python)
        if runner == "docker":
            console.print("[red]the test image carries no vLLM: use --runner local[/]")
            return 1
        runner = "local"
        console.print(f"runner: [bold]local[/] (vLLM environment {python})")
    elif runner in ("auto", "docker"):
        ok, why = docker_usable(args.image, build=True)
        if runner == "docker" and not ok:
            console.print(f"[red]docker runner requested but {why}[/]")
            return 1
        runner = "docker" if ok else "local"
        console.print(f"runner: [bold]{runner}[/] ({why})")
    else:
        console.print("runner: [bold]local[/] (requested)")
    campaign = prepare_campaign(args.campaign, args.work, runner, args.image)
    cfg = yaml.safe_load(campaign.read_text())
    dag_id = f"llem_{cfg['campaign']}"

    from llem_airflow.stack import AirflowStack

    stack = AirflowStack(home=args.work / "airflow", campaigns=campaign.parent, port=args.port,
                         extra_env=extra_env)
    console.print(f"starting Airflow (SQLite, LocalExecutor) in {stack.home} ...")
    with stack:
        api = stack.client()
        api.wait_for_dag(dag_id)
        conf = {"cycles": args.cycles or cfg.get("execution", {}).get("cycles", 2)}
        run_id = f"example__{int(time.time())}"
        r = api.trigger(dag_id, conf, run_id)
        if r.status_code >= 400:
            console.print(f"[red]trigger refused[/]: {r.status_code} {r.text}")
            return 1
        console.print(f"triggered {dag_id} run {run_id} with {conf} "
                      f"(UI: http://127.0.0.1:{args.port}/dags/{dag_id})")

        def progress(state: str, tis: list[dict]) -> None:
            exp = [t for t in tis if t["task_id"].endswith(".experiment")
                   and t.get("map_index", -1) >= 0]
            done = sum(t["state"] == "success" for t in exp)
            failed = sum(t["state"] in ("failed", "upstream_failed") for t in exp)
            sys.stdout.write(f"\r  run {state}: {done}/{len(exp)} experiments done, "
                             f"{failed} failed   ")
            sys.stdout.flush()

        state = api.wait_run(dag_id, run_id, timeout_s=1800, progress=progress)
        print()
        digest = api.xcom(dag_id, run_id, "aggregate")
    console.print(f"run finished: [bold]{state}[/]")
    print_table(digest)
    console.print(f"results folder: {digest['run_dir']}")
    return 0 if state == "success" and not digest.get("missing") else 1


if __name__ == "__main__":
    sys.exit(main())
