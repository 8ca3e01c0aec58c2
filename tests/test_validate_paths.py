"""Checks `llem validate` makes before anything runs: what would fail every experiment."""

from __future__ import annotations

import os

import pytest
import yaml

from llem_core.campaign.config import ExperimentConfig
from llem_core.cli import main
from llem_core.runtime.backends.base import BackendError
from llem_core.runtime.experiment import phases
from llem_core.runtime.experiment.errors import ExperimentError


def test_a_results_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "results").write_text("not a folder")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"campaign": "c", "base": {"model": "org/m"},
                                    "results_dir": "results"}))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: results_dir:" in err and "is not a folder" in err


def test_the_backend_numbers_gpus_as_nvml_does(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def refuse(cfg):
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # set before CUDA can load
        raise BackendError("no backend here")

    monkeypatch.setattr(phases, "get_backend", refuse)
    with pytest.raises(ExperimentError, match="no backend here"):
        phases.import_backend(ExperimentConfig(model="/m"))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # a user's explicit choice stays
    with pytest.raises(ExperimentError):
        monkeypatch.setattr(phases, "get_backend", lambda cfg: (_ for _ in ()).throw(
            BackendError("x")))
        phases.import_backend(ExperimentConfig(model="/m"))
    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_backend_server_without_its_extra_is_a_one_line_error(monkeypatch):
    import builtins

    from llem_core.analysis.results import RunSpec
    from llem_core.runtime.measure import run

    real_import = builtins.__import__

    def no_httpx(name, *args, **kwargs):
        if name == "httpx" or name.startswith("llem_core.runtime.serving.experiment"):
            raise ImportError("No module named 'httpx'", name="httpx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_httpx)
    cfg = ExperimentConfig(model="/m", backend="server",
                           server={"url": "http://127.0.0.1:1"}, load={"pattern": "burst"})
    with pytest.raises(ExperimentError, match=r"needs the 'serving' extra \(httpx"):
        run(RunSpec(config=cfg))
