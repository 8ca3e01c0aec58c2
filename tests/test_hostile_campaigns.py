"""Files `llem validate` used to accept and that broke DAG building (or a run) for everyone.

Each is now a file error naming the file and the field, found within seconds.
"""

from __future__ import annotations

import json
import time

import pytest

from llem_core.cli import main

BASE = "campaign: x\nbase: {model: org/m}\n"


def _laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return BASE + "\n".join(lines) + f"\ngrid: {{extra.boom: [*l{levels}]}}\n"


LAUGHS = _laughs()
HUGE_GRID = BASE + "grid:\n" + "".join(
    f"  {axis}: [{', '.join(str(v) for v in range(1, 21))}]\n"
    for axis in ("batch_size", "warmup_runs", "max_output_tokens", "max_input_tokens", "seed"))
DEEP = "campaign: x\nbase: {model: org/m, extra: {a: " + "[" * 5000 + "]" * 5000 + "}}\n"
HEAVY_BASE = ("campaign: x\nbase: {model: org/m, extra: {x: [" + ", ".join(["0"] * 1000)
              + "]}}\ngrid: {seed: [" + ", ".join(map(str, range(3000))) + "]}\n")
MANY_KEYS = "campaign: x\nbase: {model: m, " + ", ".join(
    f"batch_siz{i}: 1" for i in range(40_000)) + "}\n"
BIG_FILE = BASE + "description: '" + "x" * (1 << 20) + "'\n"

# (id, campaign text, extra files {name: text}, expected field path, words in the reason)
CASES: list[tuple[str, str, dict[str, str], str, str]] = [
    ("timeout-inf", BASE + "execution: {experiment_timeout_s: .inf}\n", {},
     "execution.experiment_timeout_s", "finite"),
    ("timeout-nan", BASE + "execution: {experiment_timeout_s: .nan}\n", {},
     "execution.experiment_timeout_s", "finite"),
    ("timeout-huge", BASE + "execution: {experiment_timeout_s: 1e12}\n", {},
     "execution.experiment_timeout_s", "less than or equal to 604800"),
    ("base-float-nan", "campaign: x\nbase: {model: m, decoding: {temperature: .nan}}\n", {},
     "base.decoding.temperature", "finite"),
    ("grid-float-inf", BASE + "grid: {energy.min_window_s: [1, .inf]}\n", {},
     "grid.energy.min_window_s[1]", "finite"),
    ("health-inf", BASE + "health: {timeout_s: .inf}\n", {}, "health.timeout_s", "finite"),
    ("extra-nan", "campaign: x\nbase: {model: m, extra: {x: [1, .nan]}}\n", {},
     "base.extra", "inf or nan"),
    ("name-too-long", f"campaign: {'a' * 92}\nbase: {{model: m}}\n", {}, "campaign",
     "at most 91 characters"),
    ("name-trailing-dot", "campaign: abc.\nbase: {model: m}\n", {}, "campaign",
     "results folder"),
    ("name-double-dot", "campaign: a..b\nbase: {model: m}\n", {}, "campaign", "single dots"),
    ("name-slash", "campaign: a/b\nbase: {model: m}\n", {}, "campaign", "letters, digits"),
    ("shm-garbage", BASE + "runner: {shm_size: lots}\n", {}, "runner.shm_size", "not a size"),
    ("shm-negative", BASE + "runner: {shm_size: -1g}\n", {}, "runner.shm_size", "not a size"),
    ("shm-zero", BASE + "runner: {shm_size: 0}\n", {}, "runner.shm_size", "between 1 byte"),
    ("shm-fraction", BASE + "runner: {shm_size: 1.5g}\n", {}, "runner.shm_size", "not a size"),
    ("shm-huge", BASE + "runner: {shm_size: 5000g}\n", {}, "runner.shm_size", "and 1024g"),
    ("shm-bool", BASE + "runner: {shm_size: true}\n", {}, "runner.shm_size", "valid string"),
    ("cron-out-of-range", "campaign: x\nschedule: '61 * * * *'\nbase: {model: m}\n", {},
     "schedule", "not a valid cron expression"),
    ("cron-letters", "campaign: x\nschedule: '0 0 * * FOO'\nbase: {model: m}\n", {},
     "schedule", "not a valid cron expression"),
    ("cron-step-zero", "campaign: x\nschedule: '*/0 * * * *'\nbase: {model: m}\n", {},
     "schedule", "not a valid cron expression"),
    ("cron-never", "campaign: x\nschedule: '0 0 31 2 *'\nbase: {model: m}\n", {}, "schedule",
     "never fires"),
    ("huge-grid", HUGE_GRID, {}, "grid", "3200000 combinations"),
    ("heavy-base", HEAVY_BASE, {}, "grid", "3000 combinations of this size hold"),
    ("dup-top-key", "campaign: x\ncampaign: y\nbase: {model: m}\n", {}, "campaign",
     "duplicate key (lines 1 and 2)"),
    ("dup-nested-key", "campaign: x\nbase:\n  model: m\n  batch_size: 1\n  batch_size: 64\n", {},
     "base.batch_size", "duplicate key (lines 4 and 5)"),
    ("dup-in-list", "campaign: x\nbase: {model: m}\nexperiments:\n  - {dtype: float16, "
     "dtype: float32}\n", {}, "experiments[0].dtype", "duplicate key"),
    ("billion-laughs", LAUGHS, {}, "line ", "holds more than"),
    ("deep-nesting", DEEP, {}, "line 2", "nest"),  # ours, or libyaml's own limit
    ("recursive-alias", BASE + "x: &a [1, *a]\n", {}, "line 3", "contains it"),
    ("too-many-aliases", BASE + "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n", {},
     "line 4", "more than 1000 aliases"),
    ("file-too-large", BIG_FILE, {}, "(file)", "larger than"),
    ("integer-too-long", "campaign: x\nbase: {model: m, seed: " + "9" * 5000 + "}\n", {},
     "line 2", "digits"),
    ("cycles-true", BASE + "execution: {cycles: true}\n", {}, "execution.cycles", "boolean"),
    ("batch-true", "campaign: x\nbase: {model: m, batch_size: true}\n", {}, "base.batch_size",
     "boolean"),
    ("grid-bool", BASE + "grid: {batch_size: [1, true]}\n", {}, "grid.batch_size[1]", "boolean"),
    ("temperature-false", "campaign: x\nbase: {model: m, decoding: {temperature: false}}\n", {},
     "base.decoding.temperature", "boolean"),
    ("gpus-bool", "campaign: x\nbase: {model: m, gpus: [true]}\n", {}, "base.gpus", "boolean"),
    ("experiment-bool", BASE + "experiments:\n  - {warmup_runs: true}\n", {},
     "experiments[0].warmup_runs", "boolean"),
    ("seed-huge", "campaign: x\nbase: {model: m, seed: 100000000000000000000000000000}\n", {},
     "base.seed", "less than or equal to 4294967295"),
    ("execution-seed-huge", BASE + "execution: {seed: 4294967296}\n", {}, "execution.seed",
     "less than or equal to 4294967295"),
    ("prompt-seed-huge", "campaign: x\nbase: {model: m, prompts: {seed: 18446744073709551616}}\n",
     {}, "base.prompts.seed", "less than or equal"),
    ("top-k-huge", "campaign: x\nbase: {model: m, decoding: {top_k: 100000000000000000000}}\n",
     {}, "base.decoding.top_k", "less than or equal"),
    ("runner-gpus-repeat", BASE + "runner: {gpus: [0, 1, 0]}\n", {}, "runner.gpus", "repeat"),
    ("runner-gpus-negative", BASE + "runner: {gpus: [-1]}\n", {}, "runner.gpus", "between 0"),
    ("base-gpus-negative", "campaign: x\nbase: {model: m, gpus: [-2]}\n", {}, "base.gpus",
     "between 0"),
    ("jsonl-missing", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n",
     {}, "base.prompts.path", "no such file"),
    ("jsonl-empty", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n",
     {"p.jsonl": "\n\n"}, "base.prompts.path", "holds no prompts"),
    ("jsonl-bad-json", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n",
     {"p.jsonl": '{"text": "a"}\n{"text": \n'}, "base.prompts.path", "line 2: not valid JSON"),
    ("jsonl-not-object", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n",
     {"p.jsonl": '["a"]\n'}, "base.prompts.path", "line 1: expected a JSON object"),
    ("jsonl-no-field", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl, "
     "field: prompt}}\n", {"p.jsonl": '{"text": "a"}\n'}, "base.prompts.path",
     "line 1: no field 'prompt'"),
    ("jsonl-field-not-str", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}"
     "\n", {"p.jsonl": '{"text": "a"}\n\n{"text": 3}\n'}, "base.prompts.path",
     "line 3: field 'text' is not a string"),
    ("jsonl-grid-path-axis", "campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: a.jsonl}}"
     "\ngrid: {prompts.path: [a.jsonl, b.jsonl]}\n", {"a.jsonl": '{"text": "a"}\n'},
     "grid.prompts.path[1]", "b.jsonl: no such file"),
    ("jsonl-grid-dict-axis", BASE + "grid:\n  prompts:\n    - {kind: builtin}\n"
     "    - {kind: jsonl, path: sub/b.jsonl}\n", {}, "grid.prompts[1].path",
     "sub/b.jsonl: no such file"),
    ("jsonl-experiment", BASE + "experiments:\n  - {prompts: {kind: jsonl, path: e.jsonl}}\n",
     {"e.jsonl": "not json\n"}, "experiments[0].prompts.path", "line 1: not valid JSON"),
    ("mount-root", BASE + "runner: {mounts: [{source: /, target: /host}]}\n", {},
     "runner.mounts[0].source", "filesystem root"),
    ("mount-socket", BASE + "runner: {mounts: [{source: /var/run/docker.sock, "
     "target: /var/run/docker.sock}]}\n", {}, "runner.mounts[0].source", "Docker socket"),
    ("mount-socket-dotdot", BASE + "runner: {mounts: [{source: /tmp/../run/docker.sock, "
     "target: /s}]}\n", {}, "runner.mounts[0].source", "Docker socket"),
    ("mount-socket-folder", BASE + "runner: {mounts: [{source: /var/run/, target: /r}]}\n", {},
     "runner.mounts[0].source", "holding the Docker socket"),
    ("mount-relative", BASE + "runner: {mounts: [{source: data, target: /d}]}\n", {},
     "runner.mounts[0].source", "absolute host path"),
    ("model-cache-root", BASE + "runner: {model_cache: /}\n", {}, "runner.model_cache",
     "filesystem root"),
    ("docker-url-remote", BASE + "runner: {docker_url: 'tcp://10.0.0.2:2375'}\n", {},
     "runner.docker_url", "not allowed"),
    ("results-dir-root", BASE + "results_dir: /\n", {}, "results_dir", "filesystem root"),
    ("host-space", BASE + "runner: {host: 'gpu 02'}\n", {}, "runner.host", "names Airflow pools"),
    ("queue-long", BASE + f"runner: {{type: local, queue: {'q' * 64}}}\n", {}, "runner.queue",
     "1 to 63"),
    ("mount-target-relative", BASE + "runner: {mounts: [{source: /data, target: data}]}\n", {},
     "runner.mounts[0].target", "absolute path inside the container"),
]


@pytest.mark.parametrize(("text", "files", "path", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hostile_campaign_is_a_file_error(tmp_path, capsys, text, files, path, reason):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    f = tmp_path / "c.yaml"
    f.write_text(text)
    started = time.monotonic()
    assert main(["validate", str(f)]) == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{f}: ")]
    assert any(ln.startswith(f"{f}: {path}") and reason in ln for ln in lines), err


@pytest.mark.parametrize("text", [LAUGHS, HUGE_GRID, DEEP, BIG_FILE, HEAVY_BASE, MANY_KEYS,
                                  BASE + "grid: {seed: [" + ", ".join(map(str, range(150_000)))
                                  + "]}\n"],
                         ids=["laughs", "grid", "deep", "big", "heavy-base", "many-keys",
                              "long-axis"])
def test_validate_answers_within_seconds(tmp_path, capsys, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    started = time.monotonic()
    assert main(["validate", str(f)]) == 1
    assert time.monotonic() - started < 5, "validate must answer quickly whatever the input"


def test_every_problem_reported_in_one_pass(write_campaign, capsys):
    f = write_campaign("""
        campaign: x
        base: {model: m, batch_sise: 2}
        grid: {batch_size: [1, -1]}
        experiments: [{dtype: int3}, 5]
        execution: {cycles: 0}
        runner: {type: docker, docker_url: 'tcp://evil:2375'}
    """)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    for path in ("execution.cycles", "base.batch_sise", "grid.batch_size[1]",
                 "experiments[0].dtype", "experiments[1]", "runner.docker_url"):
        assert f"{f}: {path}" in err, (path, err)


def test_grid_limit_is_configurable(write_campaign, capsys, monkeypatch):
    f = write_campaign(BASE + "grid: {batch_size: [1, 2], seed: [1, 2]}\n"
                       "experiments: [{seed: 9}]\n")
    monkeypatch.setenv("LLEM_MAX_GRID_SIZE", "4")
    assert main(["validate", str(f)]) == 1
    assert "5 combinations (2 batch_size x 2 seed, + 1 experiments) exceed the limit of 4" \
        in capsys.readouterr().err
    monkeypatch.setenv("LLEM_MAX_GRID_SIZE", "5")
    assert main(["validate", str(f)]) == 0


def test_expand_refuses_a_huge_grid_before_building_it(monkeypatch):
    from llem_core.config import CampaignConfig
    from llem_core.grid import GridTooLargeError, NoValidConfigError, expand

    cfg = CampaignConfig(campaign="x", base={"model": "m"},
                         grid={"seed": list(range(1000)), "batch_size": list(range(1, 1001))})
    started = time.monotonic()
    with pytest.raises(GridTooLargeError, match="1000000 combinations exceed the limit of 10000"):
        expand(cfg)
    assert time.monotonic() - started < 1
    assert issubclass(GridTooLargeError, NoValidConfigError)


def test_yaml_merge_keys_are_not_duplicates(write_campaign, capsys):
    f = write_campaign("""
        campaign: x
        common: &common {model: org/m, batch_size: 1}
        base:
          <<: *common
          batch_size: 2
    """.replace("common: &common", "description: &common"))
    # description must be a string: the anchor itself is fine, the merge is what is tested.
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "duplicate" not in err and "description" in err


def test_a_few_aliases_are_fine(write_campaign, capsys):
    f = write_campaign("""
        campaign: x
        base: {model: org/m}
        grid:
          batch_size: &sizes [1, 2]
          warmup_runs: *sizes
    """)
    assert main(["validate", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] == 4


def test_missing_local_model_is_a_warning(write_campaign, capsys, tmp_path):
    (tmp_path / "here").mkdir()
    f = write_campaign("""
        campaign: x
        base: {model: ./gone}
        grid: {model: [./gone, ./here]}
    """)
    assert main(["validate", str(f), "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    gone = str((tmp_path / "gone").resolve())
    assert any(w.startswith("base.model: local model folder " + gone) for w in warnings)
    assert any(w.startswith("grid.model[0]:") for w in warnings)
    assert not any(w.startswith("grid.model[1]:") for w in warnings)
    assert main(["validate", str(f)]) == 0
    assert f"{f}: grid.model[0]: local model folder" in capsys.readouterr().out


def test_json_output_lists_errors(write_campaign, capsys):
    f = write_campaign(BASE + "execution: {cycles: true}\n")
    assert main(["validate", str(f), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid_file"] is False
    assert {"file": str(f), "path": "execution.cycles",
            "reason": "expected a number, got a boolean (true/false)"} in data["errors"]


def test_good_jsonl_prompts_pass(write_campaign, capsys, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"text": "hello"}\n\n{"text": "world", "n": 1}\n')
    f = write_campaign("campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n")
    assert main(["validate", str(f)]) == 0


def test_prompt_file_check_is_bounded(write_campaign, capsys, tmp_path, monkeypatch):
    """Only the first lines are read: a bad line past them is the run's problem, not validate's."""
    import llem_core.campaign_paths as cp

    monkeypatch.setattr(cp, "MAX_CHECKED_LINES", 10)
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n' * 10 + "garbage\n")
    f = write_campaign("campaign: x\nbase: {model: m, prompts: {kind: jsonl, path: p.jsonl}}\n")
    assert main(["validate", str(f)]) == 0
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n' * 9 + "garbage\n")
    assert main(["validate", str(f)]) == 1
    assert "line 10: not valid JSON" in capsys.readouterr().err
    (tmp_path / "p.jsonl").write_text('{"text": "' + "a" * (cp.MAX_LINE_BYTES + 10) + '"}\n')
    assert main(["validate", str(f)]) == 1
    assert "line 1: longer than" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "reason"), [(LAUGHS, "holds more than"),
                                              (BASE + "x: &a [1, *a]\n", "contains itself")])
def test_already_parsed_yaml_is_bounded_too(text, reason):
    """A caller that parsed with yaml.safe_load (aliases become shared objects) is protected."""
    import yaml

    from llem_core.campaign_file import CampaignFileError, validate_campaign_data

    started = time.monotonic()
    with pytest.raises(CampaignFileError, match=reason):
        validate_campaign_data(yaml.safe_load(text), "c.yaml")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("loader", ["BoundedLoader", "LOADER"])
@pytest.mark.parametrize(("text", "where", "reason"), [
    (LAUGHS, "line ", "holds more than"),
    ("a: 1\nb: {c: 1, c: 2}\n", "b.c", "duplicate key (lines 2 and 2)"),
    ("a: [" * 40 + "]" * 40 + "\n", "line 1", "nested deeper than 32"),
    ("a: &x [1, *x]\n", "line 1", "contains it"),
    ("a: " + "1" * 1001 + "\n", "line 1", "digits"),
])
def test_both_loaders_enforce_the_limits(loader, text, where, reason):
    """libyaml parses when installed; the pure-Python loader is the fallback."""
    from llem_core import yaml_safe

    with pytest.raises(yaml_safe.YamlProblems) as exc:
        yaml_safe.load_bounded(text, getattr(yaml_safe, loader))
    assert any(p.where.startswith(where) and reason in p.reason for p in exc.value.problems), \
        exc.value.problems


def test_errors_are_capped(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(MANY_KEYS)
    assert main(["validate", str(f)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert 100 <= len(lines) <= 202
    assert lines[-1] == f"{f}: base: 39900 more problems not shown"
