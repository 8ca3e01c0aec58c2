"""`llem run-experiment` on the tiny local model: a real, measured generation in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llem_core.analysis.results import RunSpec, read_result
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash

pytestmark = pytest.mark.slow


def spec_file(tmp_path: Path, model: Path, **over) -> Path:
    data = {"model": str(model), "dtype": "float32", "device": "cpu", "batch_size": 2,
            "max_input_tokens": 24, "max_output_tokens": 12, "min_output_tokens": 12,
            "prompts": {"kind": "builtin", "count": 4, "length": 24, "seed": 1},
            "warmup_runs": 1, "energy": {"meter": "auto", "baseline_s": 0.2, "min_window_s": 0}}
    data.update(over)
    cfg = ExperimentConfig.model_validate(data)
    spec = RunSpec(campaign="unit", run_id="manual__2026-01-01T00:00:00+00:00", name="n",
                   config_hash=config_hash(cfg), cycle=2, position=3, config=cfg)
    p = tmp_path / "spec.json"
    p.write_text(spec.model_dump_json())
    return p


def llem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llem_core", *args], capture_output=True,
                          text=True, timeout=300)


def test_measures_real_generation(tiny_model, tmp_path):
    spec = spec_file(tmp_path, tiny_model)
    out = tmp_path / "r.json"
    p = llem("run-experiment", "--spec", str(spec), "--out", str(out))
    assert p.returncode == 0, p.stderr
    last = p.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    assert len(last.encode()) < 4096
    assert summary["status"] == "success" and summary["cycle"] == 2
    r = read_result(out)
    m = r.metrics
    assert m.requests == 4 and m.output_tokens == 4 * 12 and m.input_tokens == 4 * 24
    # every request's ITL count is its output tokens - 1, TTFT <= its end-to-end time
    pr = m.per_request
    assert pr.itl_count == [n - 1 for n in pr.output_tokens]
    assert m.itl_s.n == m.output_tokens - m.requests
    assert all(t <= e for t, e in zip(pr.ttft_s, pr.e2e_s, strict=True))
    assert 0 < m.ttft_s.p50 <= m.e2e_s.p50 <= m.window_s
    assert m.output_tokens_per_s * m.window_s == pytest.approx(m.output_tokens)
    assert m.requests_per_s * m.window_s == pytest.approx(m.requests)
    assert r.energy.source in ("none", "rapl")
    if r.energy.source == "none":
        assert r.energy.raw_j is None and r.energy.note
    assert r.provenance.device == "cpu" and r.provenance.libraries["torch"]
    assert r.config_hash == summary["config_hash"]
    t = r.provenance.timings_s
    assert t["import"] > 0 and t["load"] > 0 and t["window"] == m.window_s


def test_min_window_repeats_workload(tiny_model, tmp_path):
    spec = spec_file(tmp_path, tiny_model, energy={"meter": "none", "min_window_s": 1.0})
    out = tmp_path / "r.json"
    p = llem("run-experiment", "--spec", str(spec), "--out", str(out))
    assert p.returncode == 0, p.stderr
    m = read_result(out).metrics
    assert m.window_s >= 1.0 and m.repetitions >= 2
    assert m.requests == 4 * m.repetitions and m.output_tokens == 48 * m.repetitions
    assert m.output_tokens_per_s * m.window_s == pytest.approx(m.output_tokens)


def test_results_dir_layout(tiny_model, tmp_path):
    spec = spec_file(tmp_path, tiny_model, energy={"meter": "none", "min_window_s": 0})
    p = llem("run-experiment", "--spec", str(spec), "--results-dir", str(tmp_path / "res"))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    expected = tmp_path / "res" / "unit" / "manual__2026-01-01T00_00_00_00_00" / \
        s["config_hash"] / "cycle_2.json"
    assert Path(s["result_path"]) == expected and expected.exists()


def test_missing_model_fails_with_one_line_and_no_file(tmp_path):
    spec = spec_file(tmp_path, tmp_path / "no-such-model")
    out = tmp_path / "r.json"
    p = llem("run-experiment", "--spec", str(spec), "--out", str(out))
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith("error: model path ")
    assert "does not exist" in p.stderr
    assert not out.exists() and not list(tmp_path.glob(".r.json*"))


def test_bad_spec_is_rejected(tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps({"model": "m", "batch_size": 0}))
    p = llem("run-experiment", "--spec", str(bad), "--out", str(tmp_path / "r.json"))
    assert p.returncode == 2 and "bad spec" in p.stderr and "batch_size" in p.stderr
    bad.write_text("{not json")
    assert llem("run-experiment", "--spec", str(bad)).returncode == 2


def test_conflicting_spec_is_rejected(tiny_model, tmp_path):
    spec = spec_file(tmp_path, tiny_model, min_output_tokens=20)
    p = llem("run-experiment", "--spec", str(spec), "--out", str(tmp_path / "r.json"))
    assert p.returncode == 1 and "min_output_tokens (20) > max_output_tokens" in p.stderr


def test_spec_from_environment(tiny_model, tmp_path, monkeypatch):
    """The Docker runner passes the spec as an environment value: data, never shell."""
    spec = spec_file(tmp_path, tiny_model, energy={"meter": "none", "min_window_s": 0},
                     extra={"note": "x; rm -rf / $(touch pwned)"})
    env_p = subprocess.run(
        [sys.executable, "-m", "llem_core", "run-experiment", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**__import__("os").environ, "LLEM_SPEC_JSON": spec.read_text(),
             "LLEM_HOST_NAME": "gpu-server-7"})
    assert env_p.returncode == 0, env_p.stderr
    r = read_result(tmp_path / "r.json")
    assert r.config.extra["note"] == "x; rm -rf / $(touch pwned)"
    assert not (tmp_path / "pwned").exists()
    assert r.provenance.host == "gpu-server-7"
    assert r.provenance.container_id == __import__("socket").gethostname()


def test_warmup_until_stable_is_recorded(tiny_model, tmp_path):
    spec = spec_file(tmp_path, tiny_model, energy={"meter": "none", "min_window_s": 0},
                     warmup_runs=2, warmup_cv_threshold=0.9, warmup_cv_window=2)
    out = tmp_path / "r.json"
    p = llem("run-experiment", "--spec", str(spec), "--out", str(out))
    assert p.returncode == 0, p.stderr
    m = read_result(out).metrics
    assert m.warmup_runs >= 2 and m.warmup_converged is True
    assert m.warmup_cv is not None and m.warmup_cv <= 0.9


def test_model_code_imported_before_the_timed_load(tiny_model):
    """transformers imports a model's modeling code lazily, inside from_pretrained: the
    import phase does it first so that timings_s.load is the load alone."""
    code = (
        "import sys\n"
        "from llem_core.runtime.backends.pytorch import PytorchBackend\n"
        "from llem_core.campaign.config import ExperimentConfig\n"
        f"b = PytorchBackend(ExperimentConfig(model={str(tiny_model)!r}, device='cpu'))\n"
        "mod = 'transformers.models.llama.modeling_llama'\n"
        "assert mod not in sys.modules\n"
        "b.import_modules()\n"
        "assert mod in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr


def test_the_cli_does_not_import_the_analysis_stack():
    """Every `llem` process (each experiment's included) builds the whole parser: pandas
    and scipy.stats (~1 s of imports on 2 cores) belong to the commands that use them."""
    code = ("import sys\n"
            "from llem_core.cli import build_parser\n"
            "build_parser().parse_args(['run-experiment', '--spec', 'x'])\n"
            "heavy = [m for m in ('pandas', 'scipy', 'scipy.stats', 'pyarrow') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
