"""The per-configuration table of an aggregate digest, for an 80-column terminal.

One block per configuration: its full name (folded, never cut to a prefix that two
configurations share), n and whether it is publishable, then one line per headline
metric with its estimate, interval, unit and method. Latencies are shown in ms.
Every cell is text: names are escaped, never read as rich markup.
"""

from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.table import Table

from llem_core.analysis import metrics as registry
from llem_core.analysis.metrics import display_unit, short_label


def number(v: float) -> str:
    """About 4 significant digits, in plain notation between 1e-4 and 1e9."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e9 or a < 1e-4:
        return f"{v:.3e}"
    if a >= 1000:
        return f"{v:.0f}"
    decimals = max(0, 3 - math.floor(math.log10(a)))
    return f"{v:.{decimals}f}"


def cell_text(cell: dict[str, Any], factor: float) -> tuple[str, str]:
    """(estimate, interval) of one metric cell as text."""
    mean = cell.get("mean")
    if mean is None:
        return "—", ""
    if cell.get("ci_low") is None or cell.get("ci_high") is None:
        return number(mean * factor), "(no CI)"
    return (number(mean * factor),
            f"[{number(cell['ci_low'] * factor)}, {number(cell['ci_high'] * factor)}]")


def aggregate_table(digest: dict[str, Any], title: str) -> tuple[Table, list[str]]:
    """The digest's headline table and its caveat lines (``* name: note``)."""
    keys = digest["group_by"][:1] if digest["group_by"][0] == "config_label" \
        else digest["group_by"]
    rows = digest["table"]
    shown = [m for m in registry.headline()
             if any((r.get(m) or {}).get("mean") is not None for r in rows)]
    t = Table(title=escape(title), title_justify="left", show_lines=False)
    t.add_column("configuration / metric", overflow="fold", min_width=20)
    t.add_column("estimate", justify="right", no_wrap=True)
    t.add_column(f"{digest.get('confidence', 0.95):.0%} CI", justify="right", no_wrap=True)
    t.add_column("unit", no_wrap=True)
    t.add_column("method", overflow="fold", max_width=12)
    caveats: list[str] = []
    for i, row in enumerate(rows):
        name = " ".join(str(row[k]) for k in keys)
        publishable = row.get("publishable", row.get("n", 0) >= 3)
        if i:
            t.add_section()
        t.add_row(f"[bold]{escape(name)}[/]", f"n = {row['n']}",
                  "" if publishable else "[bold red]NOT PUBLISHABLE[/]", "", "")
        notes: list[str] = []
        for m in shown:
            cell = row.get(m) or {}
            unit, factor = display_unit(m)
            estimate, interval = cell_text(cell, factor)
            marker = " *" if cell.get("note") else ""
            t.add_row("  " + escape(short_label(m)), estimate, interval, escape(unit),
                      escape(str(cell.get("ci_method") or "")) + marker)
            if cell.get("note"):
                notes.append(cell["note"])
        caveats += [f"* {name}: {n}" for n in dict.fromkeys(notes)]
    return t, caveats
