"""End to end through `llem run-experiment` with the simulated NVML of tests/fake_nvml.

The tiny model runs on the CPU (CUDA hidden) while ``energy.meter: nvml`` meters the
simulated GPU: a 200 W draw and an energy counter that starts at 988,122 J since boot.
Counter reads are numbered by the fake: 1 = the meter's first read, 2-3 = the idle
baseline's edges, 4-5 = the measured window's edges (retries take the next numbers).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llem_core.analysis.results import ExperimentResult, read_result

pytestmark = pytest.mark.slow
FAKE_DIR = Path(__file__).parent / "fake_nvml"
REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def fake_env(tmp_path: Path, **fake: object) -> dict[str, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "LLEM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(FAKE_DIR), str(REPO),
                                          os.environ.get("PYTHONPATH", "")]),
           "FAKE_NVML_LOG": str(tmp_path / "reads.jsonl")}
    env.update({f"FAKE_NVML_{k.upper()}": str(v) for k, v in fake.items()})
    return env


def run(tmp_path: Path, model: Path, **fake: object) -> tuple[ExperimentResult, dict, dict]:
    spec = {"model": str(model), "dtype": "float32", "device": "auto", "gpus": [0],
            "batch_size": 2, "max_input_tokens": 16, "max_output_tokens": 8,
            "min_output_tokens": 8, "prompts": {"count": 4, "length": 16, "seed": 1},
            "warmup_runs": 1, "energy": {"meter": "nvml", "baseline_s": 0.5,
                                         "min_window_s": 1.5}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, "-m", "llem_core", "run-experiment", "--spec",
         str(tmp_path / "spec.json"), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=fake_env(tmp_path, **fake))
    assert p.returncode == 0, p.stderr
    reads = {r["n"]: r for r in map(json.loads, (tmp_path / "reads.jsonl").open())}
    return read_result(out), json.loads(p.stdout.strip().splitlines()[-1]), reads


def counter_delta_j(reads: dict, start: int, end: int) -> float:
    assert reads[start]["ok"] and reads[end]["ok"]
    return (reads[end]["value"] - reads[start]["value"]) / 1000.0


def assert_identities(r: ExperimentResult) -> None:
    e, m = r.energy, r.metrics
    assert e.window_s == m.window_s
    assert e.adjusted_j == pytest.approx(e.raw_j - e.baseline_w * e.window_s, rel=1e-12)
    assert e.raw_j_per_output_token == pytest.approx(e.raw_j / m.output_tokens, rel=1e-12)
    assert e.adjusted_j_per_output_token == pytest.approx(e.adjusted_j / m.output_tokens,
                                                          rel=1e-12)
    assert e.baseline_w == pytest.approx(200, rel=0.3)
    assert any("meters GPUs [0] but the model runs on cpu" in w for w in r.warnings)


def test_counter_window(tiny_model, tmp_path):
    r, summary, reads = run(tmp_path, tiny_model)
    e = r.energy
    assert e.source == "nvml_counter" == summary["energy_source"]
    assert e.raw_j == pytest.approx(counter_delta_j(reads, 4, 5), abs=1e-9)
    assert e.raw_j / e.window_s == pytest.approx(200, rel=0.15)
    assert e.counter_failed_reads == 0 and e.failed_samples == 0
    assert not [f for f in e.flags if "counter" in f or "polling" in f]
    assert_identities(r)
    t = r.provenance.timings_s
    assert t["import"] > 0 and t["load"] > 0 and t["window"] == r.metrics.window_s
    assert r.provenance.hardware["gpus"][0]["name"] == "Simulated GPU"


def test_zero_read_at_start_is_retried(tiny_model, tmp_path):
    r, _summary, reads = run(tmp_path, tiny_model, zero_counter="4")
    e = r.energy
    assert e.source == "nvml_counter" and e.counter_failed_reads == 1
    assert e.raw_j == pytest.approx(counter_delta_j(reads, 5, 6), abs=1e-9)
    assert_identities(r)


@pytest.mark.parametrize(("failing", "edge"), [("4-6", "start"), ("5-7", "end")])
def test_unreadable_counter_falls_back_to_polling(tiny_model, tmp_path, failing, edge):
    r, summary, _reads = run(tmp_path, tiny_model, fail_counter=failing)
    e = r.energy
    assert e.source == "nvml_power" == summary["energy_source"]
    assert e.raw_j == e.polled_j and e.raw_j / e.window_s == pytest.approx(200, rel=0.05)
    assert e.counter_failed_reads == 3
    assert any(f"unreadable at the window's {edge}" in f for f in e.flags)
    assert_identities(r)


def test_failed_power_samples_and_gross_disagreement(tiny_model, tmp_path):
    r, _summary, reads = run(tmp_path, tiny_model, fail_power_every=4, power_w=100)
    e = r.energy
    assert e.source == "nvml_counter"
    assert e.raw_j == pytest.approx(counter_delta_j(reads, 4, 5), abs=1e-9)
    assert e.failed_samples > 0 and e.polled_j / e.window_s == pytest.approx(100, rel=0.05)
    assert any("power samples failed to read and were skipped" in f for f in e.flags)
    assert any(re.search(r"differ by \d+\.\d% \(> 25%\)", f) for f in e.flags)
    assert set(e.flags) <= set(r.warnings)


def test_readme_python_api_example(tiny_model, tmp_path):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "./models/tiny-llama" in code
    code = code.replace("./models/tiny-llama", str(tiny_model))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=fake_env(tmp_path))
    assert p.returncode == 0, p.stderr
    r = read_result(tmp_path / "result.json")
    assert r.name == "base" and r.metrics.output_tokens > 0
    # the monitor found the (simulated) GPU and measured the window
    last = p.stdout.strip().splitlines()[-1]
    assert "nvml_counter" in last and "None" not in last.split("[", 1)[0]
