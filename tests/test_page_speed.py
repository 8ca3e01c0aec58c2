"""What keeps the report and history pages fast over 10,000 result files (issue 25, Speed),
checked by what it does rather than by timing (bench/page_speed.py times it):

- a page whose files did not change is not rendered again, and any change to them (a
  rewrite, even in place with the old size and modification time; a file added or
  removed; a file swapped for a link) renders it again: never a stale page, never a
  link's target;
- a configuration repeated by every cycle is validated once per folder, without ever
  letting a value through that validating it again would refuse;
- the JSON checks read depth from the text and still refuse what they refused.
"""

from __future__ import annotations

import json
import os

import pytest
from llem_airflow.page_cache import PageCache
from test_results_report import make_result, write_run

from llem_core.analysis import untrusted_files as untrusted
from llem_core.analysis.report import build_report
from llem_core.analysis.results import ExperimentResult, load_results, result_path, write_result


class Renders:
    """build_report of a run folder, counting how often it ran."""

    def __init__(self, run) -> None:
        self.run, self.count = run, 0

    def __call__(self) -> str:
        self.count += 1
        return build_report(self.run, trusted=self.run.parents[1])


def page(cache: PageCache, render: Renders) -> str:
    return cache.page(("report", "c"), render.run, render.run.parents[1], render)


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path)


def test_an_unchanged_folder_is_rendered_once(run):
    cache, render = PageCache(settle_ns=0), Renders(run)
    first = page(cache, render)
    assert page(cache, render) == first and render.count == 1 and cache.hits == 1
    assert "small" in first and "big" in first


def _edit(f, change) -> None:
    doc = json.loads(f.read_text())
    change(doc)
    write_result(ExperimentResult.model_validate(doc), f)  # atomic: a new file


def test_a_rewritten_result_renders_the_page_again(run):
    cache, render = PageCache(settle_ns=0), Renders(run)
    assert "zz-rewritten" not in page(cache, render)
    _edit(next(run.glob("*/cycle_2.json")),
          lambda d: d["provenance"].update(host="zz-rewritten"))
    assert "zz-rewritten" in page(cache, render) and render.count == 2


def test_an_in_place_write_that_keeps_size_and_mtime_is_seen(run):
    """A writer can set the modification time back; not the change time."""
    cache, render = PageCache(settle_ns=0), Renders(run)
    assert "host Q" not in page(cache, render)
    f = next(run.glob("*/cycle_3.json"))
    st = os.stat(f)
    text = f.read_text()
    assert text.count('"host": "h"') == 1
    with open(f, "r+") as fh:  # the same file (inode), the same size
        fh.write(text.replace('"host": "h"', '"host": "Q"'))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(f)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size,
                                                                st.st_mtime_ns)
    assert "host Q" in page(cache, render) and render.count == 2


def test_a_file_added_or_removed_renders_the_page_again(run):
    cache, render = PageCache(settle_ns=0), Renders(run)
    first = page(cache, render)
    r = make_result("fresh", 3, 1, 106.0, 506.0)
    added = result_path(run.parents[1], "c", "r1", r.config_hash, 1)
    write_result(r, added)
    assert "fresh" not in first and "fresh" in page(cache, render) and render.count == 2
    added.unlink()
    added.parent.rmdir()
    # the files of the first page again, unchanged: that page is the right answer
    assert page(cache, render) == first and render.count == 2
    next(run.glob("*/cycle_1.json")).unlink()
    page(cache, render)
    assert render.count == 3


def test_a_result_swapped_for_a_link_is_never_served_from_its_target(run, tmp_path):
    cache, render = PageCache(settle_ns=0), Renders(run)
    page(cache, render)
    f = next(run.glob("*/cycle_4.json"))
    outside = tmp_path / "outside.json"
    doc = json.loads(f.read_text())
    doc["provenance"]["host"] = "zz-outside"
    outside.write_text(json.dumps(doc))
    f.unlink()
    f.symlink_to(outside)
    shown = page(cache, render)
    assert render.count == 2
    assert "symbolic link" in shown and "zz-outside" not in shown


def test_a_folder_written_just_now_is_rendered_each_time(run):
    cache, render = PageCache(), Renders(run)  # the files were written within the tick
    page(cache, render)
    page(cache, render)
    assert render.count == 2 and len(cache) == 0


def test_memory_is_bounded(tmp_path):
    cache = PageCache(max_bytes=40_000, settle_ns=0)
    for i in range(8):
        folder = tmp_path / f"r{i}"
        folder.mkdir()
        (folder / "cycle_1.json").write_text("{}")
        cache.page(("p", i), folder, tmp_path, lambda i=i: f"{i}" * 9000)
    assert 0 < len(cache) <= 4
    assert cache.page(("p", 7), tmp_path / "r7", tmp_path, lambda: "rendered") == "7" * 9000


def test_cycles_share_one_validated_configuration(run):
    results, problems = load_results(run)
    assert len(results) == 10 and not problems
    assert len({id(r.config) for _, r in results}) == 2


def test_a_configuration_seen_before_is_still_refused_when_it_differs_in_type(run, tmp_path):
    """1 and true are equal in Python: the cache must not let `batch_size: true` through."""
    f = next(p for p in run.glob("*/cycle_5.json")
             if json.loads(p.read_text())["config"]["batch_size"] == 1)
    doc = json.loads(f.read_text())
    doc["config"]["batch_size"] = True
    f.write_text(json.dumps(doc))
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "cycle_5.json").write_text(json.dumps(doc))
    results, problems = load_results(run)
    assert len(results) == 9 and [p.path for p in problems] == [str(f)]
    assert problems[0].reason == load_results(alone)[1][0].reason


@pytest.mark.parametrize("raw", [
    b'{"a": "' + b"[" * 200 + b'"}',  # brackets inside a string are no nesting
    b'{"a": [' + b"[], " * 300 + b"[]]}",  # many brackets, two levels
    b'{"a": "\\"[[[[", "b": ' + b"[" * 63 + b"]" * 63 + b"}",  # an escaped quote
])
def test_json_with_many_brackets_but_shallow_is_read(raw):
    assert isinstance(untrusted.parse_json(raw), dict)


@pytest.mark.parametrize("raw", [
    b'{"s": "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "d": '
    + b"[" * 64 + b"]" * 64 + b"}",  # closing brackets in a string hide no depth
    b'[{"k": "\\u00e9"}, ' + b"{" * 0 + b"[" * 64 + b"]" * 64 + b"]",
])
def test_deep_json_behind_strings_is_refused(raw):
    with pytest.raises(untrusted.Unreadable, match="nested deeper"):
        untrusted.parse_json(raw)
