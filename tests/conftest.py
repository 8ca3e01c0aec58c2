"""Shared fixtures: the tiny local model (built once per session) and campaign writers."""

from __future__ import annotations

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
    from llem_core.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def write_campaign(tmp_path: Path):
    """Write YAML text (dedented) to a campaign file and return its path."""

    def write(text: str, name: str = "c.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write
