"""Review findings on the statistics: hostile or odd synthetic result sets."""

from __future__ import annotations

import pandas as pd

from llem_core.identity import identify
from llem_core.stats import summarise


def _row(campaign: str, name: str, chash: str, cycle: int, value: float) -> dict:
    return {"campaign": campaign, "run_id": "r", "config_name": name, "config_hash": chash,
            "cycle": cycle, "tokens_per_s": value, "energy_raw_j": value,
            "status": "success"}


def test_a_name_holding_a_slash_never_shares_a_label_with_another_configuration():
    # "B/x" in campaign A vs "x" in campaigns B and C: "B/x" was the label of two
    # configurations, which summarise then pooled into one row.
    df = pd.DataFrame([_row("A", "B/x", "h1", 1, 1.0), _row("B", "x", "h2", 1, 2.0),
                       _row("C", "x", "h3", 1, 3.0)])
    labels = identify(df)["config_label"]
    assert labels.nunique() == 3
    ci = summarise(df, metrics=("tokens_per_s",))
    assert len(ci) == 3 and set(ci["n"]) == {1}
