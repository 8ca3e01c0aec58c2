"""`llem run-experiment` refuses bad input before measuring, with one line and no traceback;
RunSpec identity, typed health checks and host provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llem_core.analysis.results import RunSpec
from llem_core.campaign.config import ExperimentConfig, Health, HealthCheck
from llem_core.runtime.experiment import phases
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.experiment.provenance import host_identity

VALID = {"model": "/nonexistent-model", "device": "cpu", "energy": {"meter": "none"}}


def llem(*args: str) -> subprocess.CompletedProcess:
    """The command in-process (fast): its exit code and what it wrote to stderr."""
    import contextlib
    import io

    from llem_core.cli import main

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, "", stderr.getvalue())


def llem_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llem_core", *args], capture_output=True,
                          text=True, timeout=120)


def one_line_error(p: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for n in needles:
        assert n in last, last


@pytest.mark.parametrize(("text", "needle"), [
    ("[]", "a spec is a JSON object, got list"),
    ("3", "a spec is a JSON object, got int"),
    ('"x"', "got str"),
    (json.dumps({"config": VALID, "health_check": "hot"}), "health_check"),
    (json.dumps({"config": VALID, "health_check": {"timeout_s": -1}}), "health_check.timeout_s"),
    (json.dumps({"config": VALID, "nmae": "x"}), "nmae"),
    (json.dumps({**VALID, "batch_size": 0}), "batch_size"),
])
def test_bad_specs_get_one_line(tmp_path, text, needle):
    spec = tmp_path / "spec.json"
    spec.write_text(text)
    one_line_error(llem("run-experiment", "--spec", str(spec)), 2, "bad spec", needle)


def test_a_bad_spec_gets_one_line_from_the_real_command(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("[]")
    one_line_error(llem_process("run-experiment", "--spec", str(spec)), 2, "bad spec")


def test_model_path_that_is_a_file(tmp_path):
    model = tmp_path / "model.bin"
    model.write_text("weights?")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**VALID, "model": str(model)}))
    one_line_error(llem("run-experiment", "--spec", str(spec)), 1,
                   f"model path {model} is not a folder")


def _spec(tmp_path: Path) -> str:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(VALID))
    return str(spec)


def test_out_checked_before_running(tmp_path):
    """Every case would fail only after the whole measurement (or clobber a device node)
    if --out were checked late; the model does not exist, so reaching the run would say so."""
    spec = _spec(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = {
        "": "empty path",
        str(tmp_path / "folder"): "is a folder",
        str(fifo): "not a regular file",
        str(afile / "r.json"): "is not writable",
    }
    if os.geteuid() == 0:  # root writes through permission bits: use a folder no one can
        cases["/proc/self/llem-r.json"] = "is not writable"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        cases[str(ro / "r.json")] = "is not writable"
    for out, needle in cases.items():
        p = llem("run-experiment", "--spec", spec, "--out", out)
        one_line_error(p, 2, needle)
        assert "model path" not in p.stderr  # refused before the run started
    assert fifo.exists() and not fifo.is_file()


def test_results_dir_checked_before_running(tmp_path):
    spec = _spec(tmp_path)
    blocker = tmp_path / "res"
    blocker.write_text("a file where the folder should be")
    one_line_error(llem("run-experiment", "--spec", spec, "--results-dir", str(blocker)), 2,
                   "is not writable")


def test_runspec_fills_name_and_hash_from_config():
    cfg = ExperimentConfig(model="/m")
    spec = RunSpec(config=cfg)
    # Pinned: a change of this value silently splits a campaign's results in two.
    assert spec.config_hash == "463b4319b35f"
    assert spec.name == "base" and spec.cycle == 1
    named = RunSpec(config=cfg.model_copy(update={"name": "mine"}))
    assert named.name == "mine" and named.config_hash == "463b4319b35f"
    given = RunSpec(config=cfg, name="n", config_hash="abc")
    assert (given.name, given.config_hash) == ("n", "abc")


def test_health_check_is_typed_and_defined_once():
    hc = HealthCheck.from_health(Health(max_temperature_c=70, poke_interval_s=3))
    assert hc.max_temperature_c == 70 and hc.poke_interval_s == 3
    assert HealthCheck().model_dump() == {k: getattr(Health(), k) for k in HealthCheck.model_fields}
    with pytest.raises(ValueError):
        HealthCheck(poll_s=5)


def test_preflight_waits_with_the_health_check_interval(monkeypatch, tmp_path):
    seen = {}

    def fake_wait(gpus, th, timeout_s, poll_s):
        seen.update(gpus=gpus, max_c=th.max_temperature_c, timeout_s=timeout_s, poll_s=poll_s)
        return {"ready": True}

    monkeypatch.setattr(phases, "wait_until_ready", fake_wait)
    (tmp_path / "m").mkdir()
    spec = RunSpec(config=ExperimentConfig(model=str(tmp_path / "m")),
                   health_check=HealthCheck(max_temperature_c=65, poke_interval_s=7,
                                            timeout_s=30))
    assert phases.preflight(spec, lambda _m: None) == {"ready": True}
    assert seen == {"gpus": [0], "max_c": 65, "timeout_s": 30, "poll_s": 7}


def test_preflight_refuses_conflicts_and_missing_model(tmp_path):
    bad = RunSpec(config=ExperimentConfig(model="/m", min_output_tokens=99))
    with pytest.raises(ExperimentError, match="min_output_tokens"):
        phases.preflight(bad, print)
    with pytest.raises(ExperimentError, match="does not exist"):
        phases.preflight(RunSpec(config=ExperimentConfig(model=str(tmp_path / "x"))), print)


def test_host_identity():
    assert host_identity({}, lambda: "gpu01") == ("gpu01", None)
    assert host_identity({"LLEM_HOST_NAME": "gpu01"}, lambda: "3f2a9c1d0b7e") == \
        ("gpu01", "3f2a9c1d0b7e")
    assert host_identity({"LLEM_HOST_NAME": "gpu01"}, lambda: "gpu01") == ("gpu01", None)
    assert host_identity({"LLEM_HOST_NAME": " "}, lambda: "h") == ("h", None)


def test_public_api_names():
    import llem_core

    for name in llem_core.__all__:
        assert getattr(llem_core, name) is not None
    assert llem_core.run_experiment.__module__ == "llem_core.runtime.measure"
    from llem_core.runtime.measure import ExperimentError as from_runner

    assert from_runner is llem_core.ExperimentError
