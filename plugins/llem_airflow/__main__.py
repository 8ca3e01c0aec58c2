"""The `llem-airflow` command: create the GPU pools of a campaigns folder."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from llem_airflow.factory import DEFAULT_CAMPAIGNS
from llem_airflow.pools import ensure_pools, pools_of
from llem_core.campaign.discovery import CAMPAIGNS_ENV, campaigns_dir

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llem-airflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    pools = sub.add_parser("pools", help="create one-slot GPU pools for every campaign")
    pools.add_argument("--campaigns", type=Path,
                       help=f"campaigns folder (default: ${CAMPAIGNS_ENV}, else "
                       f"{DEFAULT_CAMPAIGNS})")
    pools.add_argument("--airflow", default="airflow",
                       help="the airflow command; it uses $AIRFLOW_HOME and AIRFLOW__* settings")
    pools.add_argument("--dry-run", action="store_true", help="list the pools, create nothing")
    args = p.parse_args(argv)
    folder = args.campaigns or campaigns_dir(DEFAULT_CAMPAIGNS)
    if not folder.is_dir():
        err.print(f"error: {folder}: no such folder", markup=False, highlight=False)
        return 1
    names, errors = pools_of(folder)
    for line in errors:
        err.print(f"skipped: {line}", markup=False, highlight=False)
    home = os.environ.get("AIRFLOW_HOME", "~/airflow (Airflow's default)")
    if not args.dry_run:
        out.print(f"creating pools in the Airflow of AIRFLOW_HOME={home}", markup=False)
        try:
            ensure_pools(names, args.airflow)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            err.print(f"error: airflow pools set failed: {detail.strip()[-500:]}",
                      markup=False, highlight=False)
            return 1
    for name in names:
        out.print(f"pool {name}: 1 slot", markup=False)
    return 1 if errors and not names else 0


if __name__ == "__main__":
    sys.exit(main())
