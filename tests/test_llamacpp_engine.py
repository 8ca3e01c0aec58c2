"""backend: llamacpp for real: llem converts the tiny model to GGUF (``llem make-tiny-model
--gguf``), starts llama-cpp-python's OpenAI-compatible server on it (its own environment,
made by scripts/setup_llamacpp_env.sh) on 127.0.0.1, sends a burst, and measures it with
the meter the machine has: RAPL where its counter is readable, else none with its reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from llem_core.analysis.results import ExperimentResult, RunSpec
from llem_core.campaign.config import ExperimentConfig
from llem_core.cli import main as llem
from llem_core.runtime.experiment.errors import ExperimentError
from llem_core.runtime.measure import run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
OUT = 64
REQUESTS = 8
PROMPT = "hello world the"
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@pytest.fixture(scope="module")
def llamacpp_python() -> Path:
    named = os.environ.get("LLEM_LLAMACPP_PYTHON")
    found = Path(named) if named else REPO / ".venv-llamacpp" / "bin" / "python"
    if not found.exists():
        if os.environ.get("CI") == "true":  # CI builds the engine env: the tests must run
            pytest.fail("no llama.cpp environment (scripts/setup_llamacpp_env.sh)")
        pytest.skip("no llama.cpp environment: run scripts/setup_llamacpp_env.sh")
    return found


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model and its GGUF file, made by llem's own command."""
    folder = tmp_path_factory.mktemp("gguf")
    assert llem(["make-tiny-model", str(folder / "tiny"), "--gguf",
                 str(folder / "tiny.gguf")]) == 0
    return folder / "tiny", folder / "tiny.gguf"


def rapl_readable() -> bool:
    try:
        int(RAPL.read_text())
        return True
    except (OSError, ValueError):
        return False


def test_gguf_conversion_gives_the_same_next_token_distribution(
        tiny_gguf: tuple[Path, Path], llamacpp_python: Path) -> None:
    # the same tokens and the same log-probabilities from llama.cpp as from transformers:
    # a wrong tensor layout (q/k rotary rows, say) or vocabulary would change them
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = tiny_gguf
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(PROMPT).input_ids
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(folder)(torch.tensor([ids])).logits
    expected = torch.log_softmax(logits[0, -1], -1)
    code = (
        "import json, sys, numpy as np, llama_cpp\n"
        "m = llama_cpp.Llama(sys.argv[1], verbose=False, logits_all=True)\n"
        "t = m.tokenize(sys.argv[2].encode(), add_bos=False, special=False)\n"
        "m.eval(t)\n"
        "s = np.asarray(m.scores[len(t) - 1], dtype=np.float64)\n"
        "s = s - s.max() - np.log(np.exp(s - s.max()).sum())\n"
        "print(json.dumps({'tokens': t, 'logprobs': s.tolist()}))\n")
    done = subprocess.run([str(llamacpp_python), "-c", code, str(gguf), PROMPT],
                          capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["tokens"] == ids
    assert got["logprobs"] == pytest.approx(expected.tolist(), abs=1e-4)


def config(gguf: Path, python: Path, **llamacpp: object) -> ExperimentConfig:
    return ExperimentConfig(
        model=str(gguf), backend="llamacpp", device="cpu", dtype="float32",
        max_input_tokens=64, max_output_tokens=OUT,
        prompts={"count": REQUESTS, "length": 12},
        energy={"meter": "auto", "baseline_s": 0.5},
        llamacpp={"python": str(python), "n_ctx": 256, "n_threads": 2,
                  "loaded_baseline_s": 0.5, "startup_timeout_s": 120, **llamacpp},
        load={"pattern": "burst", "min_window_s": 0.2, "energy_interval_s": 0.01,
              "warmup_requests": 2})


def test_burst_on_a_llamacpp_server_llem_starts(tiny_gguf: tuple[Path, Path],
                                                llamacpp_python: Path,
                                                tmp_path: Path) -> None:
    _, gguf = tiny_gguf
    out = tmp_path / "cycle_1.json"
    # through the runner: the registry sends a served engine to the serving pipeline
    r = run(RunSpec(config=config(gguf, llamacpp_python), isolation="container"), out)
    assert ExperimentResult.model_validate_json(out.read_text()) == r
    s = r.serving
    assert s is not None and s.launched and s.engine == "llamacpp"
    assert s.command[:3] == [str(llamacpp_python), "-m", "llama_cpp.server"]
    assert s.command[s.command.index("--model") + 1] == str(gguf)
    version = subprocess.run([str(llamacpp_python), "-c",
                              "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert s.engine_version == version == r.provenance.libraries["llama-cpp-python"]
    assert r.provenance.isolation == "container"
    # every request streamed its tokens; the server streams no usage counts (flagged)
    assert s.num_requests == REQUESTS and s.usage_missing == REQUESTS
    assert any("no usage counts" in f for f in s.flags)
    for q in s.requests:
        # all of them: by default the server cuts a stream short when the next arrives
        assert q.tokens_received == OUT and q.ttft_s is not None
        assert 0 < q.ttft_s <= q.e2e_s
    # the server answers one request at a time: the steady state is one in flight
    assert s.steady_state.target_occupancy == 1
    m = r.metrics
    assert m.requests == REQUESTS and m.output_tokens == REQUESTS * OUT
    assert m.output_tokens_per_s > 0 and m.ttft_s.n == REQUESTS and m.itl_s.p50 > 0
    if rapl_readable():
        assert r.energy.source == "rapl" and r.energy.raw_j > 0
        assert s.idle_baseline_w is not None
    else:
        assert r.energy.source == "none" and r.energy.raw_j is None
        assert "RAPL" in r.energy.note
    with pytest.raises(httpx.ConnectError):  # stopped after its experiment
        httpx.get(s.url + "/v1/models", timeout=2)
    assert Path(s.server_log) == tmp_path / "cycle_1.server.log"


def test_a_model_that_is_no_gguf_file_is_refused_before_launch(
        tiny_gguf: tuple[Path, Path], llamacpp_python: Path, tmp_path: Path) -> None:
    folder, _ = tiny_gguf
    with pytest.raises(ExperimentError, match="is not a file"):
        run(RunSpec(config=config(folder, llamacpp_python)), tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()
