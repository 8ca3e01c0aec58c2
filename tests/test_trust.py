"""The deployment's trust policy: images, mounts and Docker endpoints a campaign may use."""

from __future__ import annotations

import os

import pytest

from llem_core.campaign.config import CampaignConfig
from llem_core.campaign.loading import CampaignFileError, load_campaign, validate_campaign_data
from llem_core.campaign.trust import mount_problem, policy_errors, server_command_problem
from llem_core.cli import main


def cfg(**kw) -> CampaignConfig:
    data = {"campaign": "t", "base": {"model": "org/m"}, "results_dir": "/data/results"}
    data.update(kw)
    return CampaignConfig.model_validate(data)


def paths(errors) -> list[str]:
    return [e.path for e in errors]


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch):
    for name in ("LLEM_ALLOWED_IMAGES", "LLEM_ALLOWED_MOUNT_ROOTS", "LLEM_ALLOWED_DOCKER_URLS",
                 "LLEM_ALLOWED_PYTHONS", "LLEM_ALLOWED_SERVER_COMMANDS"):
        monkeypatch.delenv(name, raising=False)


def test_default_policy_allows_the_documented_setup():
    c = cfg(runner={"image": "anything:latest", "model_cache": "/srv/hf",
                    "mounts": [{"source": "/data/models", "target": "/m"}]})
    assert policy_errors(c) == []


@pytest.mark.parametrize("source", ["/", "/var/run/docker.sock", "/run/docker.sock", "/run",
                                    "/var/run", "/var", "//", "/srv/../", "/run/./docker.sock"])
def test_root_and_docker_socket_never_mounted(source, monkeypatch):
    monkeypatch.setenv("LLEM_ALLOWED_MOUNT_ROOTS", "/")
    assert mount_problem(source) is not None
    errors = policy_errors(cfg(runner={"mounts": [{"source": source, "target": "/x"}]}))
    assert paths(errors) == ["runner.mounts[0].source"]


def test_symlink_to_the_docker_socket_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/var/run/docker.sock")
    assert "Docker socket" in mount_problem(str(link))


def test_images_allow_list(monkeypatch):
    monkeypatch.setenv("LLEM_ALLOWED_IMAGES", "llem-experiment:*, registry.lab/llem/*")
    assert policy_errors(cfg(runner={"image": "llem-experiment:pytorch"})) == []
    assert policy_errors(cfg(runner={"image": "registry.lab/llem/vllm:1"})) == []
    [e] = policy_errors(cfg(runner={"image": "evil/miner:latest"}))
    assert e.path == "runner.image" and "LLEM_ALLOWED_IMAGES" in e.reason


def test_docker_urls(monkeypatch):
    assert policy_errors(cfg(runner={"docker_url": "unix:///run/docker.sock"})) == []
    [e] = policy_errors(cfg(runner={"docker_url": "tcp://gpu02:2375"}))
    assert e.path == "runner.docker_url"
    monkeypatch.setenv("LLEM_ALLOWED_DOCKER_URLS", "tcp://gpu02:2376")
    assert policy_errors(cfg(runner={"docker_url": "tcp://gpu02:2376"})) == []
    assert paths(policy_errors(cfg(runner={"docker_url": "unix:///var/run/docker.sock"}))) == [
        "runner.docker_url"]


def test_mount_roots(monkeypatch, tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "models").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    monkeypatch.setenv("LLEM_ALLOWED_MOUNT_ROOTS", f"{allowed},/data")
    ok = cfg(runner={"mounts": [{"source": str(allowed / "models"), "target": "/m"}],
                     "model_cache": "/data/hf"})
    assert policy_errors(ok) == []
    bad = cfg(runner={"mounts": [{"source": str(outside), "target": "/a"},
                                 {"source": f"{allowed}/../outside", "target": "/b"},
                                 {"source": str(allowed / "escape"), "target": "/c"},
                                 {"source": f"{allowed}x", "target": "/d"}],
                      "model_cache": "/etc"},
              results_dir=str(outside),
              base={"model": str(outside / "model")})
    assert paths(policy_errors(bad)) == [
        "runner.mounts[0].source", "runner.mounts[1].source", "runner.mounts[2].source",
        "runner.mounts[3].source", "runner.model_cache", "results_dir", "base.model"]


def test_local_runner_mounts_no_model_folder_but_its_results_dir_is_bounded(monkeypatch,
                                                                            tmp_path):
    # The local runner mounts nothing, but its results_dir is written by every experiment
    # and served by the /llem pages: it was not checked (results_dir: /tmp let a viewer
    # download what lies under /tmp/<campaign>/).
    monkeypatch.setenv("LLEM_ALLOWED_MOUNT_ROOTS", "/data")
    local = {"type": "local"}
    assert policy_errors(cfg(runner=local, base={"model": "/elsewhere/model"})) == []
    [e] = policy_errors(cfg(runner=local, results_dir="/tmp"))
    assert e.path == "results_dir" and "LLEM_ALLOWED_MOUNT_ROOTS" in e.reason
    (tmp_path / "escape").symlink_to("/tmp")
    monkeypatch.setenv("LLEM_ALLOWED_MOUNT_ROOTS", str(tmp_path))
    [e] = policy_errors(cfg(runner=local, results_dir=str(tmp_path / "escape" / "r")))
    assert e.path == "results_dir"
    # validate and the DAG build share the check
    with pytest.raises(CampaignFileError, match="results_dir"):
        validate_campaign_data({"campaign": "t", "base": {"model": "org/m"},
                                "runner": local, "results_dir": "/tmp"}, "f")


def test_validation_and_dag_building_agree(write_campaign, monkeypatch, capsys):
    """load_campaign (what the DAG file calls) refuses what `llem validate` refuses."""
    f = write_campaign("campaign: x\nbase: {model: org/m}\nrunner: {image: 'evil:1'}\n")
    assert main(["validate", str(f)]) == 0
    monkeypatch.setenv("LLEM_ALLOWED_IMAGES", "llem-*")
    assert main(["validate", str(f)]) == 1
    assert f"{f}: runner.image: image 'evil:1' is not allowed" in capsys.readouterr().err
    with pytest.raises(CampaignFileError) as exc:
        load_campaign(f)
    assert exc.value.errors[0].path == "runner.image"


def test_relative_results_dir_checked_after_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_ALLOWED_MOUNT_ROOTS", str(tmp_path / "ok"))
    data = {"campaign": "t", "base": {"model": "org/m"}, "results_dir": "ok/results"}
    assert validate_campaign_data(data, "f", tmp_path).results_dir == os.path.join(
        tmp_path.resolve(), "ok", "results")
    with pytest.raises(CampaignFileError, match="results_dir"):
        validate_campaign_data({**data, "results_dir": "../../results"}, "f", tmp_path)


def test_local_runner_interpreter(monkeypatch):
    assert policy_errors(cfg(runner={"type": "local"})) == []
    [e] = policy_errors(cfg(runner={"type": "local", "python": "/tmp/evil.sh"}))
    assert e.path == "runner.python" and "LLEM_ALLOWED_PYTHONS" in e.reason
    monkeypatch.setenv("LLEM_ALLOWED_PYTHONS", "/opt/venv/bin/python")
    assert policy_errors(cfg(runner={"type": "local", "python": "/opt/venv/bin/python"})) == []


def test_server_commands_allow_list():
    assert "unset: none" in server_command_problem("/opt/vllm/bin/vllm")
    assert "LLEM_ALLOWED_SERVER_COMMANDS" in server_command_problem("/opt/vllm/bin/vllm")


@pytest.mark.parametrize("program", [
    "/opt/vllm/bin/../../../tmp/evil",   # normalised: /tmp/evil
    "/opt/vllm/bin/x/../../../../tmp/evil",
    "/opt/vllm/bin/..",
    "{model}", "/opt/vllm/bin/{model}", "{port}", "/opt/vllm/bin/}",
    "opt/vllm/bin/vllm", "./opt/vllm/bin/vllm", "~/opt/vllm/bin/vllm",
])
def test_server_command_escapes_refused(program, monkeypatch):
    monkeypatch.setenv("LLEM_ALLOWED_SERVER_COMMANDS", "/opt/vllm/bin/*,*/vllm,*")
    problem = server_command_problem(program)
    assert problem is not None and "\n" not in problem


def test_server_command_matched_normalised(monkeypatch):
    monkeypatch.setenv("LLEM_ALLOWED_SERVER_COMMANDS", "/opt/vllm/bin/*,vllm")
    assert server_command_problem("/opt/vllm/bin/vllm") is None
    assert server_command_problem("/opt/vllm/bin/./vllm") is None
    assert server_command_problem("/opt//vllm/bin/vllm") is None
    assert server_command_problem("vllm") is None  # a bare name: the worker's PATH
    assert server_command_problem("/opt/vllm/lib/./../bin/vllm") is not None
    assert server_command_problem("/opt/vllm/binx") is not None
    [e] = policy_errors(cfg(runner={"type": "local"},
                            base={"model": "/m", "backend": "server",
                                  "load": {"pattern": "burst"},
                                  "server": {"command": ["/opt/vllm/bin/../../../tmp/evil"]}}))
    assert e.path == "base.server.command" and "'..'" in e.reason
