"""`llem-airflow` command: pools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llem_airflow.factory import campaigns_dir
from llem_airflow.pools import ensure_pools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llem-airflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    pools = sub.add_parser("pools", help="create one-slot GPU pools for every campaign")
    pools.add_argument("--campaigns", type=Path, help="campaigns folder")
    args = p.parse_args(argv)
    folder = args.campaigns or campaigns_dir(Path(__file__).parent.parent.parent / "dags" / "x")
    for name in ensure_pools(folder):
        print(f"pool {name}: 1 slot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
