"""The console table stays readable in 80 columns: names are never cut to a shared
prefix, latencies are in ms, and n < 3 rows say they are not publishable."""

from __future__ import annotations

import io

from rich.console import Console

from llem_core.analysis.console_table import aggregate_table, number


def cell(mean: float, lo: float | None, hi: float | None, note: str | None = None) -> dict:
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "ci_method": "log-t", "n": 3,
            "note": note}


def render(digest: dict, width: int = 80) -> str:
    table, caveats = aggregate_table(digest, "t")
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    return buf.getvalue() + "\n".join(caveats)


def digest(rows: list[dict]) -> dict:
    return {"group_by": ["config_label", "config_name"], "confidence": 0.95, "table": rows}


def test_long_names_sharing_a_prefix_stay_distinct_in_80_columns():
    a = "vllm.max_num_seqs=8,vllm.enable_chunked_prefill=true,batch=[a]"
    b = "vllm.max_num_seqs=8,vllm.enable_chunked_prefill=false,batch=[b]"
    rows = [{"config_label": n, "config_name": n, "n": 3, "publishable": True,
             "tokens_per_s": cell(1234.5, 1200.0, 1300.0),
             "ttft_p50_s": cell(0.0009015, 0.0008, 0.001)} for n in (a, b)]
    text = render(digest(rows))
    assert all(len(line) <= 80 for line in text.splitlines()[:-1])
    first_column = [line.split("│")[1].strip() for line in text.splitlines()
                    if line.startswith("│")]
    flat = "".join(first_column)
    assert "enable_chunked_prefill=true" in flat and "enable_chunked_prefill=false" in flat
    assert "[a]" in text and "[b]" in text  # names are text, not rich markup
    assert "0.9015" in text and "ms" in text and "e-0" not in text  # TTFT in ms, plain


def test_not_publishable_rows_are_marked():
    rows = [{"config_label": "x", "config_name": "x", "n": 2, "publishable": False,
             "tokens_per_s": cell(870.0, 385.0, 2259.0, note="not publishable: ...")}]
    text = render(digest(rows))
    assert "NOT PUBLISHABLE" in text and "* x: not publishable" in text


def test_number_format_has_no_scientific_notation_in_the_usual_range():
    assert number(0.0009015) == "0.0009015"
    assert number(10291.4) == "10291" and number(146.7) == "146.7" and number(0) == "0"
    assert number(1e-7) == "1.000e-07"
