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
    from llem_core.campaign.config import CampaignConfig
    from llem_core.campaign.grid import GridTooLargeError, NoValidConfigError, expand

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
    import llem_core.campaign.paths as cp

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

    from llem_core.campaign.loading import CampaignFileError, validate_campaign_data

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
    from llem_core.campaign import yaml_safe
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


# --- issue 22, section 4: accepted, but could never run as written ---------------------------
# Each case is refused by `llem validate` and by the DAG build alike (they share
# llem_core.campaign.planning.load_and_place), with the same line.

SERVER = ("campaign: x\nrunner: {type: local}\nbase: {model: org/m, backend: server, "
          "energy: {meter: none}, load: {pattern: burst}, server: {url: %s}}\n")
RATE = ("campaign: x\nrunner: {type: local}\nbase: {model: org/m, backend: server, "
        "energy: {meter: none}, server: {url: 'http://127.0.0.1:8000'}, load: %s}\n")
VLLM = "campaign: x\nbase: {model: org/m, backend: vllm, energy: {meter: none}, %s}\n"
LOCAL_PY = "campaign: x\nbase: {model: org/m}\nrunner: {type: local, python: %s}\n"
MOUNT = BASE + "runner: {mounts: [{source: /data/a, target: /a}]}\n"

# (id, campaign text, deployment environment, expected field path, words in the reason)
NEVER_RUNS: list[tuple[str, str, dict[str, str], str, str]] = [
    # a load that never ends, a busy loop, a timeout that is no timeout
    ("rate-1e-300", RATE % "{pattern: rate, rate: 1.0e-300}", {}, "base.load.rate",
     "greater than or equal to 0.001"),
    ("rate-denormal", RATE % "{pattern: rate, rate: 5.0e-324}", {}, "base.load.rate",
     "greater than or equal to 0.001"),
    ("grid-rate-tiny", RATE % "{pattern: rate, rate: 1}" + "grid: {load.rate: [1, 1.0e-9]}\n",
     {}, "grid.load.rate[1]", "greater than or equal to 0.001"),
    ("load-outlasts-timeout", RATE % "{pattern: rate, rate: 0.01, num_requests: 1000}", {},
     "grid", "not less than execution.experiment_timeout_s (21600 s)"),
    ("load-outlasts-set-timeout", RATE % "{pattern: rate, rate: 1, num_requests: 200}"
     + "execution: {experiment_timeout_s: 60}\n", {}, "grid", "would never finish"),
    ("energy-interval-tiny", RATE % "{pattern: burst, energy_interval_s: 1.0e-300}", {},
     "base.load.energy_interval_s", "greater than or equal to 0.001"),
    ("metrics-interval-tiny", SERVER % "'http://127.0.0.1:8000', metrics_interval_s: 1.0e-300",
     {}, "base.server.metrics_interval_s", "greater than or equal to 0.01"),
    ("poll-interval-tiny", "campaign: x\nbase: {model: m, energy: {poll_interval_s: 1.0e-300}}\n",
     {}, "base.energy.poll_interval_s", "greater than or equal to 0.001"),
    ("poke-interval-tiny", BASE + "health: {poke_interval_s: 1.0e-300}\n", {},
     "health.poke_interval_s", "greater than or equal to 1"),
    ("burstiness-tiny", RATE % "{pattern: rate, rate: 1, arrival: gamma, burstiness: 1.0e-300}",
     {}, "base.load.burstiness", "greater than or equal to 0.01"),
    ("timeout-tiny", BASE + "execution: {experiment_timeout_s: 1.0e-300}\n", {},
     "execution.experiment_timeout_s", "greater than or equal to 1"),
    ("timeout-null", BASE + "execution: {experiment_timeout_s: null}\n", {},
     "execution.experiment_timeout_s", "valid number"),
    ("gap-outlasts-timeout", BASE + "execution: {experiment_timeout_s: 60, config_gap_s: 600}\n",
     {}, "execution", "config_gap_s (600) is not shorter than experiment_timeout_s (60)"),
    ("min-window-outlasts-timeout", "campaign: x\nbase: {model: m, energy: {min_window_s: 120}}\n"
     "execution: {experiment_timeout_s: 60}\n", {}, "grid", "energy.min_window_s (120 s)"),
    # a server URL that cannot be what it says
    ("url-port-0", SERVER % "'http://127.0.0.1:0'", {}, "base.server.url", "port '0'"),
    ("url-port-65536", SERVER % "'http://127.0.0.1:65536'", {}, "base.server.url",
     "port '65536'"),
    ("url-no-host", SERVER % "'http://:8000'", {}, "base.server.url", "has no host"),
    ("url-query", SERVER % "'http://127.0.0.1:8000/?a=1'", {}, "base.server.url", "query"),
    ("url-fragment", SERVER % "'http://127.0.0.1:8000#x'", {}, "base.server.url", "fragment"),
    ("url-credentials", SERVER % "'http://user:pw@127.0.0.1:8000'", {}, "base.server.url",
     "credentials"),
    ("url-scheme", SERVER % "'file:///etc/passwd'", {}, "base.server.url", "not an http(s) URL"),
    ("url-backslash", SERVER % "'http://127.0.0.1:8000\\\\@evil'", {}, "base.server.url",
     "backslash"),
    ("url-space", SERVER % "'http://127.0.0.1 :8000'", {}, "base.server.url", "whitespace"),
    ("url-ipv6-zone", SERVER % "'http://[fe80::1%25eth0]:8000'", {}, "base.server.url",
     "not an IPv6 address"),
    ("url-ipv6-bare", SERVER % "'http://::1:8000'", {}, "base.server.url",
     "neither an IP address nor a host name"),
    ("url-with-docker", SERVER.replace("runner: {type: local}", "runner: {type: docker}")
     % "'http://127.0.0.1:8000'", {}, "base.server.url", "have no network"),
    ("url-grid-with-docker", SERVER.replace("runner: {type: local}\n", "")
     % "'http://127.0.0.1:8000'", {}, "base.server.url", "network_mode none"),
    # prompts longer than the engine's context are refused, not "truncated"
    ("prompts-longer-than-input", VLLM % "prompts: {length: 600}, load: {pattern: burst}", {},
     "grid", "sends each prompt whole"),
    ("prompts-past-model-len", VLLM % "prompts: {length: 100}, max_input_tokens: 100, "
     "vllm: {max_model_len: 128}, load: {pattern: burst}", {}, "grid",
     "vllm.max_model_len 128 is shorter than max_input_tokens + max_output_tokens"),
    # the deployment's variables fail closed and say why
    ("images-empty-list", BASE, {"LLEM_ALLOWED_IMAGES": " , "}, "runner.image",
     "LLEM_ALLOWED_IMAGES=' , ' is set but lists nothing"),
    ("grid-size-garbage", BASE, {"LLEM_MAX_GRID_SIZE": "lots"}, "grid",
     "LLEM_MAX_GRID_SIZE='lots' is not a positive integer"),
    ("grid-size-zero", BASE, {"LLEM_MAX_GRID_SIZE": "0"}, "grid", "not a positive integer"),
    ("grid-size-negative", BASE, {"LLEM_MAX_GRID_SIZE": "-5"}, "grid", "not a positive integer"),
    ("grid-size-unicode-digits", BASE, {"LLEM_MAX_GRID_SIZE": "١٠"}, "grid",
     "not a positive integer"),
    ("mount-roots-relative", MOUNT, {"LLEM_ALLOWED_MOUNT_ROOTS": "/data, data"},
     "runner.mounts[0].source", "LLEM_ALLOWED_MOUNT_ROOTS entry 'data' is not an absolute"),
    # read literally, a glob entry refused every path with "not under /data/*"
    ("mount-roots-glob", MOUNT, {"LLEM_ALLOWED_MOUNT_ROOTS": "/data/*"},
     "runner.mounts[0].source", "LLEM_ALLOWED_MOUNT_ROOTS entry '/data/*' is a glob"),
    ("results-roots-glob", BASE + "results_dir: /data/a\n",
     {"LLEM_ALLOWED_MOUNT_ROOTS": "/data/[ab]"}, "results_dir", "is a glob"),
    ("pythons-relative-entry", LOCAL_PY % "/opt/venv/bin/python",
     {"LLEM_ALLOWED_PYTHONS": "/opt/venv/bin/python,venv/bin/python"}, "runner.python",
     "LLEM_ALLOWED_PYTHONS entry 'venv/bin/python' is a relative path"),
    ("pythons-empty-list", LOCAL_PY % "/opt/venv/bin/python", {"LLEM_ALLOWED_PYTHONS": ","},
     "runner.python", "is set but lists nothing"),
    ("python-relative-resolved", LOCAL_PY % "venv/bin/python",
     {"LLEM_ALLOWED_PYTHONS": "/opt/venv/bin/python"}, "runner.python", "/venv/bin/python"),
    ("python-dotdot", LOCAL_PY % "/opt/venv/bin/../../../tmp/evil",
     {"LLEM_ALLOWED_PYTHONS": "/opt/*"}, "runner.python", "'..' component"),
    ("server-commands-relative-entry", "campaign: x\nrunner: {type: local}\nbase: {model: org/m, "
     "backend: server, load: {pattern: burst}, server: {command: [/opt/s/serve]}}\n",
     {"LLEM_ALLOWED_SERVER_COMMANDS": "./serve"}, "base.server.command",
     "LLEM_ALLOWED_SERVER_COMMANDS entry './serve' is a relative path"),
]


@pytest.fixture
def deployment(monkeypatch, tmp_path):
    """No allow-list set, a private cache: each case sets only what it tests."""
    for name in ("LLEM_ALLOWED_IMAGES", "LLEM_ALLOWED_MOUNT_ROOTS", "LLEM_ALLOWED_DOCKER_URLS",
                 "LLEM_ALLOWED_PYTHONS", "LLEM_ALLOWED_SERVER_COMMANDS", "LLEM_MAX_GRID_SIZE",
                 "LLEM_ALLOW_HOST_IPC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def _validate_and_build(tmp_path, capsys, text: str) -> tuple[int, list[str], list[str], set]:
    from llem_airflow import factory

    folder = tmp_path / "camps"
    folder.mkdir(exist_ok=True)
    f = folder / "c.yaml"
    f.write_text(text)
    rc = main(["validate", str(f)])
    out = capsys.readouterr()
    dags, build_errors = factory.build_dags(folder)
    return rc, (out.err + out.out).splitlines(), build_errors, set(dags)


@pytest.mark.parametrize(("text", "env", "path", "reason"), [c[1:] for c in NEVER_RUNS],
                         ids=[c[0] for c in NEVER_RUNS])
def test_validate_and_the_dag_build_refuse_what_cannot_run(tmp_path, capsys, deployment,
                                                           text, env, path, reason):
    for name, value in env.items():
        deployment.setenv(name, value)
    rc, lines, build_errors, dags = _validate_and_build(tmp_path, capsys, text)
    f = tmp_path / "camps" / "c.yaml"
    wanted = [ln for ln in lines if ln.startswith(f"{f}: {path}") and reason in ln]
    assert rc == 1 and wanted, lines
    assert dags == set() and wanted[0] in build_errors, (wanted, build_errors)
    assert all("\n" not in e for e in build_errors)


@pytest.mark.parametrize(("text", "env"), [
    # every list is globs of programs, PYTHONS as SERVER_COMMANDS
    (LOCAL_PY % "/opt/venv3/bin/python", {"LLEM_ALLOWED_PYTHONS": "/opt/venv*/bin/python"}),
    (LOCAL_PY % "venv/bin/python", {"LLEM_ALLOWED_PYTHONS": "{root}/venv/bin/python"}),
    (BASE, {"LLEM_ALLOWED_IMAGES": ""}),  # empty is unset: the default
    (BASE, {"LLEM_MAX_GRID_SIZE": " 20 "}),
    (SERVER % "'http://[::1]:8000/base/'", {}),
    (SERVER % "'HTTP://localhost'", {}),
    (RATE % "{pattern: rate, rate: 0.01, num_requests: 200}", {}),
])
def test_what_can_run_is_accepted_by_both(tmp_path, capsys, deployment, text, env):
    for name, value in env.items():
        deployment.setenv(name, value.replace("{root}", str(tmp_path / "camps")))
    rc, lines, build_errors, dags = _validate_and_build(tmp_path, capsys, text)
    assert rc == 0 and build_errors == [] and dags == {"llem_x"}, (lines, build_errors)


def test_a_remote_server_is_a_warning_in_validate_and_on_the_dag_page(tmp_path, capsys,
                                                                        deployment):
    rc, lines, build_errors, dags = _validate_and_build(
        tmp_path, capsys, SERVER % "'http://gpu-07.lab:8000'")
    assert rc == 0 and build_errors == [] and dags == {"llem_x"}
    assert any("warning" in ln and "server.url host 'gpu-07.lab' is not a loopback" in ln
               for ln in lines), lines
    from llem_airflow import factory

    assert "is not a loopback address" in factory.build_dags(tmp_path / "camps")[0][
        "llem_x"].doc_md


def test_pytorch_truncation_warning_is_the_only_truncation_warning(deployment):
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.campaign.grid import conflicts, soft_warnings

    torch = ExperimentConfig(model="m", prompts={"length": 600})
    assert any("truncated to max_input_tokens=512" in w for w in soft_warnings(torch))
    served = ExperimentConfig(model="m", backend="vllm", load={"pattern": "burst"},
                              prompts={"length": 600})
    assert not any("truncated" in w for w in soft_warnings(served))
    assert any("sends each prompt whole" in c for c in conflicts(served))


def test_a_served_jsonl_prompt_longer_than_max_input_tokens_stops_before_the_engine(tmp_path):
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.runtime.experiment.errors import ExperimentError
    from llem_core.runtime.serving.experiment import bodies_for

    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "short"}\n{"text": "' + " ".join(["w"] * 40) + '"}\n')
    cfg = ExperimentConfig(model="m", backend="server", max_input_tokens=32,
                           server={"url": "http://127.0.0.1:9"}, load={"pattern": "burst"},
                           prompts={"kind": "jsonl", "path": str(p)})
    with pytest.raises(ExperimentError, match=r"prompt 2 has 40 words .* more than "
                                              r"max_input_tokens \(32\)"):
        bodies_for(cfg, cfg.server, cfg.load)
    ok = cfg.model_copy(update={"max_input_tokens": 64})
    bodies, warm = bodies_for(ok, ok.server, ok.load)
    assert len(bodies) == 2 and all(len(b["prompt"].split()) <= 64 for b in warm)


# --- hostile trigger params: validated in the plan task (REST skips the form) ----------------

def _campaign():
    from llem_core.campaign.config import CampaignConfig

    return CampaignConfig(campaign="p", base={"model": "org/m", "energy": {"meter": "none"}},
                          grid={"max_output_tokens": [4, 8]}, execution={"cycles": 2})


@pytest.mark.parametrize(("params", "reason"), [
    ({"seed": 2**70}, "params.seed: must be an integer from 0 to 4294967295, got "
                      "1180591620717411303424 (int)"),
    ({"seed": -5}, "params.seed: must be an integer from 0 to 4294967295, got -5 (int)"),
    ({"seed": "7"}, "params.seed: must be an integer from 0 to 4294967295, got '7' (str)"),
    ({"seed": 7.0}, "params.seed: must be an integer"),
    ({"seed": True}, "params.seed: must be an integer"),
    ({"dry_run": "false"}, "params.dry_run: must be true or false, got 'false' (str)"),
    ({"dry_run": 0}, "params.dry_run: must be true or false, got 0 (int)"),
    ({"dry_run": None}, "params.dry_run: must be true or false"),
    ({"ordering": "random"}, "params.ordering: must be one of interleaved, shuffled, grouped, "
                             "got 'random'"),
    ({"ordering": ["grouped"]}, "params.ordering: must be one of"),
    ({"cycles": "2"}, "params.cycles: must be an integer from 1 to 2, got '2' (str)"),
    ({"cycles": 3}, "params.cycles: must be an integer from 1 to 2, got 3"),
    ({"configs": ["max_output_tokens=4", "max_output_tokens=4"]},
     "params.configs: ['max_output_tokens=4'] listed more than once"),
    ({"configs": "max_output_tokens=4"}, "params.configs: must be a list of configuration names"),
    ({"configs": [4]}, "params.configs: must be a list of configuration names"),
    ({"configs": ["nope"]}, "params.configs: unknown configurations ['nope']"),
    ({"max_output_tokens": 0}, "params.max_output_tokens: must be null or an integer from 1 "
                               "to 131072, got 0 (int)"),
    ({"max_output_tokens": "64"}, "params.max_output_tokens: must be null or an integer"),
    ({"warmup_runs": 101}, "params.warmup_runs: must be null or an integer from 0 to 100"),
    ({"warmup_runs": 2.5}, "params.warmup_runs: must be null or an integer"),
    ({"cycle": 1}, "params: unknown trigger param(s) ['cycle']"),
])
def test_hostile_trigger_params_are_one_line_errors(params, reason):
    from llem_core.campaign.planning import PlanError, plan_run

    with pytest.raises(PlanError) as exc:
        plan_run(_campaign(), params, "r1")
    assert str(exc.value).startswith(reason) and "\n" not in str(exc.value), str(exc.value)


def test_repeated_configs_are_found_in_linear_time():
    """A REST conf may list many thousands of names: counting each name's repeats over the
    whole list (quadratic) held the plan task's CPU for minutes."""
    from llem_core.campaign.planning import PlanError, check_params

    configs = [f"c{i}" for i in range(100_000)] + ["c7"]
    started = time.monotonic()
    with pytest.raises(PlanError, match=r"^params\.configs: \['c7'\] listed more than once"):
        check_params({"cycles": 1, "ordering": "interleaved", "seed": 0, "dry_run": False,
                      "configs": configs}, 1)
    assert time.monotonic() - started < 5


def test_an_override_that_breaks_a_configuration_is_one_line(deployment):
    from llem_core.campaign.config import CampaignConfig
    from llem_core.campaign.planning import PlanError, plan_run

    cfg = CampaignConfig(campaign="p", base={"model": "org/m", "min_output_tokens": 8,
                                             "energy": {"meter": "none"}})
    with pytest.raises(PlanError) as exc:
        plan_run(cfg, {"max_output_tokens": 4}, "r1")
    assert str(exc.value) == ("params: params.max_output_tokens=4 makes 'base' invalid: "
                              "min_output_tokens (8) > max_output_tokens (4)")


def test_plan_task_refuses_params_that_came_through_rest(tmp_path, capsys, deployment):
    """The plan task sees what a REST trigger sends, not what the form would have allowed."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException
    from llem_airflow import factory

    cfg = _campaign()
    params = {"cycles": 2, "ordering": "interleaved", "seed": 0, "configs": [],
              "dry_run": "false", "max_output_tokens": None, "warmup_runs": None}
    context = {"params": params, "run_id": "r1", "dag_run": SimpleNamespace(conf={})}
    with pytest.raises(AirflowFailException, match=r"^params\.dry_run: must be true or false"):
        factory.plan_task(cfg.model_copy(update={"results_dir": str(tmp_path)}), context)
    dags = _validate_and_build(tmp_path, capsys, "campaign: x\nbase: {model: org/m}\n")[3]
    assert factory.build_dags(tmp_path / "camps")[0]["llem_x"].params.get_param(
        "seed").schema["maximum"] == 2**32 - 1 and dags == {"llem_x"}
