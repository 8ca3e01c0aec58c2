"""Issue 22, sections 2 and 3, through both entry points (`llem validate` and build_dags):
campaign text the metadata database cannot hold, and engine settings that load code or
reach past the experiment's GPUs and folders. Each case fails alone: the other campaign
of the folder keeps its DAG, and both entry points print the same line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llem_airflow import factory

from llem_core.campaign.loading import CampaignFileError, validate_campaign_data
from llem_core.campaign.text_rules import REFUSED
from llem_core.cli import main
from tests.test_airflow_dag import _cache, folder, write  # noqa: F401  (fixtures)

VLLM = {"backend": "vllm", "device": "cpu", "dtype": "float32", "load": {"pattern": "burst"}}
SERVER = {"backend": "server", "device": "cpu", "load": {"pattern": "burst"},
          "server": {"command": ["vllm", "serve", "{model}", "--port", "{port}"]}}


def _base(root: Path, **over: Any) -> dict[str, Any]:
    return {"model": str(root / "model"), "batch_size": 1, "energy": {"meter": "none"},
            "prompts": {"kind": "jsonl", "path": str(root / "prompts.jsonl")}, **over}


# (id, overrides of the campaign given the folder's parent, field path, words of the reason)
CASES: list[tuple[str, Any, str, str]] = [
    # section 2: every string field, whatever its depth
    ("description-nul", lambda r: {"description": "a\x00b"}, "description", "U+0000"),
    ("name-escape", lambda r: {"experiments": [{"name": "n\x1b[2J"}]}, "experiments[0].name",
     "U+001B"),
    ("results-dir-c1", lambda r: {"results_dir": str(r / "res\x85")}, "results_dir",
     "U+0085"),
    ("model-bidi", lambda r: {"base": _base(r, model="org/m\u202eevil")}, "base.model",
     "U+202E"),
    ("extra-key-deep", lambda r: {"base": _base(r, extra={"a": [{"k\u2028": 1}]})},
     "base.extra", "U+2028"),
    ("extra-value-del", lambda r: {"base": _base(r, extra={"a": "x\x7f"})}, "base.extra",
     "U+007F"),
    ("server-model-name", lambda r: {"base": _base(r, **{
        **SERVER, "server": {**SERVER["server"], "model_name": "m\x00"}})},
     "base.server.model_name", "U+0000"),
    ("grid-value-tab", lambda r: {"grid": {"extra.note": ["a\tb"]}}, "grid.extra.note[0]",
     "U+0009"),
    ("mount-target-nul", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": str(r), "target": "/d\x00"}]}}, "runner.mounts[0].target", "U+0000"),
    # section 3: flags outside the allow-list, JSON keys, checked values
    ("compilation-config", lambda r: {"base": _base(r, **VLLM, vllm={"extra_args": [
        "--compilation-config", '{"backend": "pkg.mod"}']})}, "base.vllm.extra_args",
     "not among the engine flags"),
    ("cc-dotted", lambda r: {"base": _base(r, **VLLM), "grid": {"vllm.extra_args": [
        ["-cc.backend=pkg.mod"]]}}, "grid.vllm.extra_args[0]", "JSON-valued"),
    ("load-format-code", lambda r: {"base": _base(r, **VLLM), "experiments": [{"vllm": {
        "extra_args": ["--load-format", "tensorizer"]}}]},
     "experiments[0].vllm.extra_args", "takes auto or"),
    # engine environments: the floor, and the allow-list
    ("cuda-injection", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "CUDA_INJECTION64_PATH": "/tmp/x.so"}})}, "base.vllm.env", "load or run other code"),
    ("nccl-plugin-axis", lambda r: {"base": _base(r, **VLLM), "grid": {
        "vllm.env.NCCL_NET_PLUGIN": ["/tmp/x.so"]}}, "grid.vllm.env.NCCL_NET_PLUGIN[0]",
     "load or run other code"),
    ("openssl-server", lambda r: {"base": _base(r, **{**SERVER, "server": {
        **SERVER["server"], "env": {"OPENSSL_CONF": "/tmp/c"}}})}, "base.server.env",
     "load or run other code"),
    ("triton-ptxas", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "TRITON_PTXAS_PATH": "/tmp/p"}})}, "base.vllm.env", "load or run other code"),
    ("vllm-nccl-so", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "VLLM_NCCL_SO_PATH": "/tmp/p"}})}, "base.vllm.env", "load or run other code"),
    ("env-not-listed", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "HF_HOME": "/tmp/h"}})}, "base.vllm.env", "not among the engine variables"),
    ("server-gpus", lambda r: {"base": _base(r, **{**SERVER, "server": {
        **SERVER["server"], "env": {"CUDA_VISIBLE_DEVICES": "3"}}})}, "base.server",
     "selects GPUs"),
    ("server-gpus-grid", lambda r: {"base": _base(r, **SERVER), "grid": {
        "server.env": [{"NVIDIA_VISIBLE_DEVICES": "all"}]}}, "grid.server.env[0]",
     "selects GPUs"),
    # mounts that give root on the host, whatever the mount roots allow
    ("mount-proc", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/proc", "target": "/p"}]}}, "runner.mounts[0].source", "never mounted"),
    ("mount-etc-file", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/etc/shadow", "target": "/s"}]}}, "runner.mounts[0].source",
     "never mounted"),
    ("mount-usr-writable", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/usr/local", "target": "/u", "read_only": False}]}},
     "runner.mounts[0].source", "only be mounted read-only"),
    ("model-cache-docker-data", lambda r: {"runner": {
        "type": "docker", "image": "img:1", "model_cache": "/var/lib/docker/volumes"}},
     "runner.model_cache", "never mounted"),
    ("results-under-run", lambda r: {"results_dir": "/run/llem"}, "results_dir",
     "never mounted"),
    ("model-in-sys", lambda r: {"base": _base(r, model="/sys/kernel")}, "base.model",
     "never mounted"),
    # cases found by a red-team pass after the first fixes landed
    # a model id that the engine's argv reads as an option ('-cc.backend' takes the next
    # argument as a JSON setting in vLLM's parser)
    ("model-is-an-option", lambda r: {"base": _base(r, **VLLM, model="-cc.backend")},
     "base.model", "begins with '-'"),
    ("model-option-grid", lambda r: {"grid": {"model": ["--trust-remote-code"]}},
     "grid.model[0]", "begins with '-'"),
    # other engines' and the cluster's data; what root runs later, writable
    ("mount-etcd", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/var/lib/etcd", "target": "/e"}]}}, "runner.mounts[0].source",
     "never mounted"),
    ("mount-libvirt-ro", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/var/lib/libvirt/images", "target": "/i", "read_only": True}]}},
     "runner.mounts[0].source", "never mounted"),
    ("mount-dpkg-writable", lambda r: {"runner": {"type": "docker", "image": "img:1", "mounts": [
        {"source": "/var/lib/dpkg", "target": "/d", "read_only": False}]}},
     "runner.mounts[0].source", "only be mounted read-only"),
    ("results-in-apt-cache", lambda r: {"results_dir": "/var/cache"}, "results_dir",
     "only be mounted read-only"),
    # environment that loads a library, or moves the compile caches whose code is loaded
    ("omp-tool-library", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "OMP_TOOL_LIBRARIES": "/tmp/x.so"}})}, "base.vllm.env", "load or run other code"),
    ("home-axis", lambda r: {"base": _base(r, **VLLM), "grid": {
        "vllm.env.HOME": ["/tmp/planted"]}}, "grid.vllm.env.HOME[0]", "load or run other code"),
    ("inductor-remote-cache", lambda r: {"base": _base(r, **VLLM, vllm={"env": {
        "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1"}})}, "base.vllm.env",
     "load or run other code"),
]


@pytest.mark.parametrize(("over", "path", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_alike_by_validate_and_the_dag_build(folder, capsys, over, path, reason):  # noqa: F811
    write(folder, "good")
    bad = write(folder, "bad", **over(folder.parent))
    dags, errors = factory.build_dags(folder)
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 1
    shown = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"{bad}: ")]
    assert set(dags) == {"llem_good"}
    assert errors == shown, (errors, shown)  # the same lines, from the same checks
    assert any(ln.startswith(f"{bad}: {path}") and reason in ln for ln in shown), shown
    assert not any(REFUSED.search(ln) for ln in shown)  # escaped, one line each


def test_a_symlink_into_a_system_folder_is_refused(folder, capsys):  # noqa: F811
    link = folder.parent / "innocent"
    link.symlink_to("/etc")
    bad = write(folder, "bad", runner={"type": "docker", "image": "img:1", "mounts": [
        {"source": str(link), "target": "/d"}]})
    assert main(["validate", str(bad)]) == 1
    assert "(as /etc) reaches the host's /etc" in capsys.readouterr().err


def test_a_folder_above_a_system_folder_is_refused(folder, capsys):  # noqa: F811
    bad = write(folder, "bad", runner={"type": "docker", "image": "img:1", "mounts": [
        {"source": "/var/lib", "target": "/d"}]})
    assert main(["validate", str(bad)]) == 1
    assert "reaches the host's /var/lib/docker" in capsys.readouterr().err


def test_allowed_settings_still_pass(folder, monkeypatch):  # noqa: F811
    root = folder.parent
    write(folder, "ok", description="two lines\n\twith a tab, é 漢 \u200d",
          base=_base(root, **VLLM, vllm={"extra_args": ["--block-size", "32"], "env": {
              "OMP_NUM_THREADS": "2", "VLLM_CPU_KVCACHE_SPACE": "1"}}),
          runner={"type": "docker", "image": "img:1", "mounts": [
              {"source": "/usr/share", "target": "/s"}, {"source": str(root), "target": "/r",
                                                          "read_only": False}]})
    write(folder, "more", base=_base(root, **VLLM, vllm={"env": {"HF_HOME": "/h"}}))
    dags, errors = factory.build_dags(folder)
    assert set(dags) == {"llem_ok"} and len(errors) == 1 and "HF_HOME" in errors[0]
    monkeypatch.setenv("LLEM_ALLOWED_ENGINE_ENV", "HF_*")
    assert set(factory.build_dags(folder)[0]) == {"llem_ok", "llem_more"}
    for bad in ("LD_PRELOAD", "1X", " , ", "TMPDIR"):
        monkeypatch.setenv("LLEM_ALLOWED_ENGINE_ENV", bad)
        dags, errors = factory.build_dags(folder)
        assert set(dags) == set() and all("LLEM_ALLOWED_ENGINE_ENV" in e for e in errors)


@pytest.mark.parametrize("text", ['description: "\\u2066"', 'description: "a\\x9bb"',
                                  "base: {model: m, extra: {\"\\0\": 1}}",
                                  '"campaign\\e": x'])
def test_yaml_escapes_are_refused_with_their_line(tmp_path, capsys, text):
    f = tmp_path / "c.yaml"
    f.write_text("campaign: x\nbase: {model: m}\n" + text + "\n")
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "line 3: " in err and "U+" in err and not REFUSED.search(err.replace("\n", "")), err


def test_the_model_layer_refuses_what_does_not_come_from_yaml():
    """Data from Python (or from a loader other than llem's) is checked by the models."""
    data = {"campaign": "x", "description": "ok \ud800", "base": {"model": "m", "extra": {
        "k": ["a", {"b": "\x00"}]}}}
    with pytest.raises(CampaignFileError) as exc:
        validate_campaign_data(data, "c.yaml")
    lines = exc.value.lines()
    assert any(ln.startswith("c.yaml: base.extra: ") and "U+0000" in ln for ln in lines)
    assert any(ln.startswith("c.yaml: description: ") and "U+D800" in ln for ln in lines)
    assert not any(REFUSED.search(ln) for ln in lines)


def test_trigger_params_cannot_smuggle_text(folder):  # noqa: F811
    from llem_core.campaign.discovery import iter_campaigns
    from llem_core.campaign.planning import PlanError, plan_run

    write(folder, "good")
    [campaign], _ = iter_campaigns(folder)
    with pytest.raises(PlanError) as exc:
        plan_run(campaign.loaded.config, {"configs": ["x\x00"]}, "r1")
    assert "\x00" not in str(exc.value)
