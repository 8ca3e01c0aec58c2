"""The collector is paused around an experiment's big import and what it built is frozen.

Each case runs in a fresh interpreter: the freeze happens once per process, and the pytest
process must not be frozen by a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def run_py(code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_pause_freezes_once_then_leaves_later_garbage_collectable():
    out = run_py("""
        import gc, json, weakref
        from llem_core.runtime.experiment.import_gc import already_done, imports_paused, own_process

        class Node: pass
        own_process()
        gc.collect()
        tracked = len(gc.get_objects())
        with imports_paused():
            inside = gc.isenabled()
            keep = [Node() for _ in range(5000)]
        first = {"inside": inside, "after": gc.isenabled(),
                 "frozen": gc.get_freeze_count() - tracked, "done": already_done()}
        # a second pause (a warm worker importing again) must not freeze what is alive now:
        # a cycle made later stays collectable
        with imports_paused():
            a = Node(); a.self = a; ref = weakref.ref(a); del a
        frozen_again = gc.get_freeze_count() - tracked
        gc.collect()
        print(json.dumps({**first, "frozen_again": frozen_again, "cycle_freed": ref() is None}))
    """)
    assert out["inside"] is False and out["after"] is True and out["done"] is True
    assert out["frozen"] >= 5000  # what was made inside, beyond what existed before
    assert out["frozen_again"] == out["frozen"]
    assert out["cycle_freed"] is True


def test_collector_comes_back_after_an_error_and_stays_off_if_it_was_off():
    out = run_py("""
        import gc, json
        from llem_core.runtime.experiment import import_gc

        import_gc.own_process()
        try:
            with import_gc.imports_paused():
                raise ImportError("no such backend")
        except ImportError:
            pass
        after_error = gc.isenabled()
        import_gc._done = False
        gc.disable()
        with import_gc.imports_paused():
            pass
        print(json.dumps({"after_error": after_error, "kept_off": not gc.isenabled()}))
    """)
    assert out == {"after_error": True, "kept_off": True}


def test_a_process_llem_does_not_own_is_never_paused_or_frozen():
    """A Python user's run_experiment in a notebook: their heap is not frozen."""
    out = run_py("""
        import gc, json
        from llem_core.runtime.experiment.import_gc import already_done, imports_paused

        with imports_paused():
            inside = gc.isenabled()
        print(json.dumps({"inside": inside, "frozen": gc.get_freeze_count(),
                          "done": already_done()}))
    """)
    assert out == {"inside": True, "frozen": 0, "done": False}


# runs the `llem run-experiment` command (its entry point) in this interpreter, watching
# the collector around the import; the command ends with os._exit, so it prints at once
RUN_EXPERIMENT = """
    import gc, json, sys
    from llem_core import cli
    from llem_core.runtime.experiment import phases

    seen = {{}}
    collections = []
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"])
                        if phase == "start" else None)
    real = phases.import_backend

    def watched(cfg):
        before = len(collections)
        out = real(cfg)
        seen.update(during=len(collections) - before, enabled=gc.isenabled(),
                    frozen=gc.get_freeze_count(), seconds=out[1],
                    llama="transformers.models.llama.modeling_llama" in sys.modules)
        print(json.dumps(seen), flush=True)
        return out

    phases.import_backend = watched
    sys.argv = ["llem", "run-experiment", "--spec", {spec!r}, "--out", {out!r}]
    cli.entry()
"""


@pytest.mark.slow
def test_run_experiment_imports_torch_and_transformers_without_collecting(tiny_model,
                                                                          tmp_path):
    """0.5-0.7 s of a container experiment's ~3 s import was the collector walking the objects
    torch and transformers create; afterwards they are frozen and the collector is on for
    the measured window."""
    from test_run_experiment import spec_file

    spec = spec_file(tmp_path, tiny_model)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN_EXPERIMENT.format(
        spec=str(spec), out=str(tmp_path / "r.json")))], capture_output=True, text=True,
        timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[0])
    assert out["llama"]
    assert out["during"] == 0
    assert out["enabled"] is True
    assert out["frozen"] > 100_000
    assert out["seconds"] > 0
    assert (tmp_path / "r.json").exists()
