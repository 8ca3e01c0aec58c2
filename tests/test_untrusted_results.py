"""A results folder is untrusted input: every experiment can write it.

Links (to files and to folders, anywhere below the trusted folder), FIFOs, sockets,
devices, hard links, oversized or non-UTF-8 files, deeply nested JSON and odd names are
planted in real folders and read by the module and by every reader (results loading,
plans, aggregate, report, history, the pages' summary, the CLI): each is a listed
problem, never content, and nothing waits on a read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from pathlib import Path

import pytest
from test_results_report import make_result, write_run

from llem_core.analysis import untrusted_files as untrusted
from llem_core.analysis.aggregate import aggregate_dir, read_plans
from llem_core.analysis.history import history
from llem_core.analysis.history_report import history_html
from llem_core.analysis.report import build_report, write_report
from llem_core.analysis.results import load_results, read_result, result_path, write_result
from llem_core.cli import main

SECRET = "TOP-SECRET-7f3a"
MATH_NAME = "$\\frac{a}{$ mathtext"


def prompt(fn, timeout: float = 10.0):
    """``fn()`` in a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"blocked for more than {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def fifos():
    """FIFOs made by a test; each is opened for writing at the end, so that a reader
    that did block (the bug) is released instead of leaking a stuck thread."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for p in made:
        with contextlib.suppress(OSError):  # ENXIO: no reader waiting, nothing to release
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))


def secret_result(outside: Path) -> Path:
    """A valid result of the same run, outside the results folder, named SECRET."""
    r = make_result(SECRET, 4, 1, 999.0, 700.0)
    path = outside / "cycle_1.json"
    write_result(r, path)
    return path


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """(results root, a folder outside it) with a real run at root/c/r1."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    root = tmp_path / "results"
    write_run(root)
    return root, outside


# -- the module -------------------------------------------------------------------------

def test_a_link_to_a_file_is_refused_and_its_target_never_read(tree):
    root, outside = tree
    (root / "c" / "r1" / "report.html").symlink_to(outside / "secret.txt")
    with untrusted.open_folder(root / "c" / "r1", root) as f, \
            pytest.raises(untrusted.Unreadable, match="symbolic link") as exc:
        untrusted.read_file(f, "report.html", 1000)
    assert SECRET not in str(exc.value)


def test_a_linked_folder_anywhere_below_the_trusted_folder_is_refused(tree):
    root, outside = tree
    (outside / "run").mkdir()
    (outside / "run" / "aggregate.json").write_text(json.dumps({"x": SECRET}))
    (root / "c" / "linked").symlink_to(outside / "run")
    with untrusted.open_folder(root, root) as f, \
            pytest.raises(untrusted.Unreadable, match="symbolic link"):
        untrusted.read_file(f, "c/linked/aggregate.json", 1000)
    with pytest.raises(untrusted.Unreadable, match="symbolic link"):
        untrusted.open_folder(root / "c" / "linked", root)
    # the campaign folder itself a link: refused below the trusted results_dir too
    (root / "moved").symlink_to(outside)
    with pytest.raises(untrusted.Unreadable):
        untrusted.open_folder(root / "moved" / "run", root)


def test_the_trusted_folder_itself_is_resolved_as_the_os_does(tree, tmp_path):
    root, _ = tree
    (tmp_path / "alias").symlink_to(root)
    with untrusted.open_folder(tmp_path / "alias" / "c" / "r1", tmp_path / "alias") as f:
        assert "aggregate" not in untrusted.walk(f, lambda n: n == "x")[0]


def test_paths_outside_or_with_dotdot_are_refused(tree):
    root, _ = tree
    with pytest.raises(untrusted.Unreadable, match="not inside"):
        untrusted.open_folder(root / ".." / "outside", root)
    with untrusted.open_folder(root, root) as f, \
            pytest.raises(untrusted.Unreadable, match=r"'\.\.'"):
        untrusted.read_file(f, "../outside/secret.txt", 1000)


def test_a_fifo_is_refused_at_once(tree, fifos):
    root, _ = tree
    fifos(root / "c" / "r1" / "aggregate.json")
    with untrusted.open_folder(root / "c" / "r1") as f, \
            pytest.raises(untrusted.Unreadable, match="FIFO"):
        prompt(lambda: untrusted.read_file(f, "aggregate.json", 1000))


def test_sockets_devices_and_hard_links_are_refused(tree):
    root, outside = tree
    run = root / "c" / "r1"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(run / "cycle_9.json"))
    os.link(outside / "secret.txt", run / "summary.csv")
    with untrusted.open_folder(run) as f:
        with pytest.raises(untrusted.Unreadable, match="socket"):
            untrusted.read_file(f, "cycle_9.json", 1000)
        with pytest.raises(untrusted.Unreadable, match="hard links"):
            untrusted.read_file(f, "summary.csv", 1000)
    sock.close()
    if os.geteuid() == 0:  # only root may make a device node
        os.mknod(run / "zero.json", 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
        with untrusted.open_folder(run) as f, pytest.raises(untrusted.Unreadable,
                                                            match="character device"):
            prompt(lambda: untrusted.read_file(f, "zero.json", 1000))


def test_reads_are_capped(tree):
    root, _ = tree
    (root / "big.json").write_bytes(b" " * 5000)
    with untrusted.open_folder(root) as f:
        with pytest.raises(untrusted.Unreadable, match="larger than 4096"):
            untrusted.read_file(f, "big.json", 4096)
        assert len(untrusted.read_file(f, "big.json", 5000)) == 5000


@pytest.mark.parametrize(("raw", "why"), [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b"[" * 65 + b"]" * 65, "nested deeper"),
    (b'{"a": "\\ud800"}', "lone surrogate"),
    (b'{"\\udc00": 1}', "lone surrogate"),
    (b"{half", "corrupt JSON"),
])
def test_json_that_is_not_text_or_too_deep_is_refused(raw, why):
    with pytest.raises(untrusted.Unreadable, match=why):
        untrusted.parse_json(raw)


def test_real_unicode_json_is_read():
    assert untrusted.parse_json(b'{"n": "\\ud83d\\ude00 \xc3\xa9"}') == {"n": "\U0001f600 é"}
    assert untrusted.parse_json(b"[" * 64 + b"]" * 64) is not None


def test_walk_yields_regular_files_and_lists_the_rest(tree, fifos):
    root, outside = tree
    run = root / "c" / "r1"
    fifos(run / "fifo" / "cycle_1.json")
    (run / "linkdir").symlink_to(outside)
    (run / "h" / "cycle_1.json").parent.mkdir()
    (run / "h" / "cycle_1.json").symlink_to(outside / "secret.txt")
    os.mkdir(os.fsencode(run) + b"/odd\xff")
    deep = run.joinpath(*["d"] * 15)
    deep.mkdir(parents=True)
    (deep / "cycle_1.json").write_text("{}")
    with untrusted.open_folder(run) as f:
        files, problems = prompt(lambda: untrusted.walk(f, lambda n: n == "cycle_1.json"))
    assert len(files) == 2 and all(p.count("/") == 1 for p in files)  # not the deep one
    reasons = dict(problems)
    assert "FIFO" in reasons["fifo/cycle_1.json"]
    assert "symbolic link" in reasons["linkdir"] and "symbolic link" in reasons["h/cycle_1.json"]
    assert "not UTF-8" in reasons["odd\ufffd"]
    assert any("deeper than" in why for why in reasons.values())


# -- every reader -----------------------------------------------------------------------

def plant(run: Path, outside: Path, fifos) -> None:
    """A linked result file, a linked configuration folder, a FIFO result and plan."""
    secret_result(outside)
    (run / "aaaaaaaaaaaa").mkdir()
    (run / "aaaaaaaaaaaa" / "cycle_1.json").symlink_to(outside / "cycle_1.json")
    (run / "bbbbbbbbbbbb").symlink_to(outside)
    fifos(run / "cccccccccccc" / "cycle_1.json")
    (outside / "plan.json").write_text(json.dumps({"runs": [
        {"name": SECRET, "config_hash": "0" * 12, "cycle": 1}]}))
    (run / "plan.json").symlink_to(outside / "plan.json")


def test_load_results_lists_planted_files_as_problems(tree, fifos):
    root, outside = tree
    run = root / "c" / "r1"
    plant(run, outside, fifos)
    ok, problems = prompt(lambda: load_results(run))
    assert len(ok) == 10 and SECRET not in {r.name for _, r in ok}
    reasons = {Path(p.path).relative_to(run).as_posix(): p.reason for p in problems}
    assert "symbolic link" in reasons["aaaaaaaaaaaa/cycle_1.json"]
    assert "symbolic link" in reasons["bbbbbbbbbbbb"]
    assert "FIFO" in reasons["cccccccccccc/cycle_1.json"]


def test_read_result_refuses_a_fifo_or_link(tree, fifos):
    root, outside = tree
    fifo = fifos(root / "c" / "r1" / "x" / "cycle_1.json")
    with pytest.raises(ValueError, match="FIFO"):
        prompt(lambda: read_result(fifo))
    link = root / "c" / "r1" / "y" / "cycle_1.json"
    link.parent.mkdir()
    link.symlink_to(secret_result(outside))
    with pytest.raises(ValueError, match="symbolic link"):
        read_result(link)
    # a linked folder between results_dir and the file
    (root / "c" / "r2").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        read_result(root / "c" / "r2" / "cycle_1.json", trusted=root)


def test_plans_are_read_without_following_links(tree, fifos):
    root, outside = tree
    run = root / "c" / "r1"
    plant(run, outside, fifos)
    runs, _, notes = read_plans(run)
    assert runs is None
    assert any("plan.json" in n and "symbolic link" in n for n in notes)


def test_aggregate_and_report_list_planted_files_and_show_no_secret(tree, fifos):
    root, outside = tree
    run = root / "c" / "r1"
    plant(run, outside, fifos)
    (outside / "target.parquet").write_text(SECRET)
    (run / "results.parquet").symlink_to(outside / "target.parquet")
    digest = prompt(lambda: aggregate_dir(run, trusted=root), timeout=60)
    assert digest["results"] == 10 and digest["planned"] is None
    assert len(digest["problems"]) == 3
    assert SECRET not in json.dumps(digest["table"])
    # the parquet replaced the planted link instead of being written through it
    assert (outside / "target.parquet").read_text() == SECRET
    assert not (run / "results.parquet").is_symlink()
    page = prompt(lambda: build_report(run, trusted=root), timeout=60)
    assert SECRET not in page and "symbolic link" in page and "FIFO" in page


def test_aggregate_refuses_a_run_folder_that_is_a_link(tree):
    root, _ = tree
    (root / "c" / "r9").symlink_to(root / "c" / "r1")
    with pytest.raises(ValueError, match="symbolic link"):
        aggregate_dir(root / "c" / "r9", trusted=root)


def test_history_skips_linked_runs_and_other_campaigns(tree, fifos):
    root, outside = tree
    other = outside / "r0"
    write_result(make_result(SECRET, 1, 1, 5.0, 500.0, run_id="r0"),
                 other / "aaaaaaaaaaaa" / "cycle_1.json")
    (root / "c" / "r0").symlink_to(other)
    fifos(root / "c" / "r1" / "dddddddddddd" / "cycle_1.json")
    write_result(make_result("x", 1, 1, 5.0, 500.0, campaign="intruder", run_id="r5"),
                 result_path(root, "c", "r5", "eeeeeeeeeeee", 1))
    h = prompt(lambda: history(root / "c", trusted=root, campaign="c"), timeout=60)
    assert list(h.runs["run_id"]) == ["r1"]
    reasons = " ".join(p.reason for p in h.problems)
    assert "symbolic link" in reasons and "FIFO" in reasons and "intruder" in reasons
    page = history_html(h, "History of c")
    assert SECRET not in page


def test_cli_aggregate_report_and_history_list_planted_files(tree, fifos, capsys):
    root, outside = tree
    run = root / "c" / "r1"
    plant(run, outside, fifos)
    assert prompt(lambda: main(["aggregate", str(run)]), timeout=60) == 0
    out = capsys.readouterr().out
    assert "symbolic link" in out and "FIFO" in out and SECRET not in out
    assert prompt(lambda: main(["report", str(run), "-o", str(run / "report.html")]),
                  timeout=60) == 0
    assert SECRET not in (run / "report.html").read_text()
    assert prompt(lambda: main(["history", str(root / "c")]), timeout=60) == 0
    out = capsys.readouterr().out
    assert "FIFO" in out and SECRET not in out


def test_cli_history_does_not_write_through_a_planted_link(tree, capsys):
    root, outside = tree
    (root / "c" / "history").symlink_to(outside)
    assert main(["history", str(root / "c")]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_results_page_summary_reads_no_link_and_no_fifo(tree, fifos):
    from llem_airflow.results_view import read_summary

    root, outside = tree
    run = root / "c" / "r1"
    aggregate_dir(run)
    (run / "aggregate.json").unlink()
    (outside / "aggregate.json").write_text(json.dumps({
        "results": 1, "missing": [], "table": [{"config_name": SECRET, "n": 1}]}))
    (run / "aggregate.json").symlink_to(outside / "aggregate.json")
    (run / "summary.csv").unlink()
    (run / "summary.csv").symlink_to(outside / "secret.txt")
    fifos(run / "plan.json")
    fifos(run / "ffffffffffff" / "cycle_1.json")
    s = prompt(lambda: read_summary(run, root))
    assert not s.aggregated and s.result_files == 10
    text = " ".join(s.problems)
    assert "aggregate.json" in text and "symbolic link" in text and "FIFO" in text
    assert SECRET not in text and "summary.csv" not in s.files and "summary.md" in s.files


# -- names are text ---------------------------------------------------------------------

def write_named(root: Path, names: tuple[str, ...], campaign: str = "c",
                run_id: str = "r1") -> Path:
    for cycle in (1, 2, 3):
        for i, name in enumerate(names):
            r = make_result(name, i + 1, cycle, 100.0 * (i + 1) + cycle, 500.0 - i + cycle,
                            campaign=campaign, run_id=run_id)
            r.metrics.per_request = None
            write_result(r, result_path(root, campaign, run_id, r.config_hash, cycle))
    return root / campaign / run_id


def test_a_mathtext_name_is_text_in_the_aggregate_report_and_history(tmp_path):
    run = write_named(tmp_path, (MATH_NAME, "plain"))
    digest = aggregate_dir(run)
    assert {r["config_name"] for r in digest["table"]} == {MATH_NAME, "plain"}
    page = write_report(run, run / "report.html").read_text()
    assert "could not be drawn" not in page
    assert "<svg" in page and "frac{a}" in page
    hist = history_html(history(tmp_path / "c"), "History of c")
    assert "could not be drawn" not in hist and "<svg" in hist


def test_a_chart_that_cannot_be_drawn_is_a_note_and_the_rest_stands(tmp_path):
    # A throughput of 1.7e308 (a valid number in a result file) breaks matplotlib's drift
    # chart (its axis cannot be laid out): that chart is a note, the others are drawn.
    run = write_named(tmp_path, ("a", "b"))
    for cycle in (1, 2, 3):
        r = make_result("huge", 9, cycle, 1.7e308, 400.0)
        write_result(r, result_path(tmp_path, "c", "r1", r.config_hash, cycle))
    page = build_report(run)
    assert "over cycles&#x27; could not be drawn: ValueError" in page
    assert page.count("<svg") >= 5 and "Per-configuration estimates" in page


def test_long_labels_are_shortened_in_charts(tmp_path):
    long = "x" * 5000  # a configuration name is at most 200 characters; a result's is not
    run = write_named(tmp_path, ("short",))
    for cycle in (1, 2, 3):
        r = make_result("long", 9, cycle, 50.0 + cycle, 400.0)
        r.name = long
        write_result(r, result_path(tmp_path, "c", "r1", r.config_hash, cycle))
    page = build_report(run)
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert svgs and not any(long in svg for svg in svgs)
    assert "x" * 79 in "".join(svgs)  # shortened, still there

