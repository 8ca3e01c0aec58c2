"""Shared fixtures: the tiny local model (built once per session) and campaign writers."""

from __future__ import annotations

import gc
import os
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests that build DAGs in-process import Airflow: keep it off the user's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="llem-test-airflow-home-"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama saved locally; reuses models/tiny-llama when the repo has one."""
    prebuilt = os.environ.get("LLEM_TINY_MODEL")
    if prebuilt and Path(prebuilt, "config.json").exists():
        return Path(prebuilt)
    from llem_core.runtime.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def write_campaign(tmp_path: Path):
    """Write YAML text (dedented) to a campaign file and return its path."""

    def write(text: str, name: str = "c.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


def vllm_python_path() -> Path | None:
    """The engine's interpreter: $LLEM_VLLM_PYTHON, else the repo's .venv-vllm (made by
    scripts/setup_vllm_env.sh); None when neither exists."""
    named = os.environ.get("LLEM_VLLM_PYTHON")
    candidate = Path(named) if named else REPO / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.exists() else None


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    found = vllm_python_path()
    if found is None:
        if os.environ.get("CI") == "true":  # CI builds the engine env: the tests must run
            pytest.fail("no vLLM environment (scripts/setup_vllm_env.sh makes .venv-vllm)")
        pytest.skip("no vLLM environment: run scripts/setup_vllm_env.sh")
    return found


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama with head_dim 32 (vLLM's CPU attention refuses smaller)."""
    prebuilt = os.environ.get("LLEM_VLLM_TINY_MODEL")
    if prebuilt and Path(prebuilt, "config.json").exists():
        return Path(prebuilt)
    from llem_core.runtime.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "vllm-tiny", arch="vllm-tiny")


@pytest.fixture(autouse=True)
def _pytest_heap_never_frozen():
    """llem freezes the collector's view of a heap only in processes it owns
    (llem_core.runtime.experiment.import_gc): a test that calls llem in-process must not freeze
    pytest's, which would also hide garbage from every later test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()  # so that only the test that froze it fails
        pytest.fail("this test froze the pytest process's heap")
