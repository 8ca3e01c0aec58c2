"""Field rules: sizes, cron, campaign names as folders, numbers that are numbers, paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from llem_core.analysis.results import safe_part
from llem_core.campaign.config import CampaignConfig, DockerRunner, Execution, ExperimentConfig
from llem_core.campaign.config_rules import parse_size
from llem_core.campaign.loading import validate_campaign_data


@pytest.mark.parametrize(("text", "expected"), [
    ("512m", 512 * 2**20), ("2g", 2 * 2**30), ("2G", 2 * 2**30), ("2gb", 2 * 2**30),
    ("64k", 65536), ("1073741824", 2**30), (1073741824, 2**30), ("100b", 100),
    (" 1024g ", 2**40), ("64 MB", 64 * 2**20),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected
    # The factory's former parser reads every accepted size the same way.
    legacy = str(text).strip().lower().removesuffix("b")
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    assert (int(float(legacy[:-1]) * units[legacy[-1]]) if legacy[-1] in units
            else int(legacy)) == expected
    assert DockerRunner(shm_size=text).shm_size_bytes == expected


@pytest.mark.parametrize("text", ["", "g", "-1g", "1.5g", "1e9", "2x", "2 g b", "0", "0m",
                                  "1ib", "2gib", "1t", "9" * 17, "1025g", True])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)
    with pytest.raises(ValidationError):
        DockerRunner(shm_size=text)


@pytest.mark.parametrize("cron", ["0 6 * * MON-FRI", "*/15 * * * *", "0 0 29 2 *", "@daily",
                                  "@continuous", " 0 0 * * 0 ", "0 0 L * *", "0 0 * * 1#2"])
def test_good_schedules(cron):
    assert CampaignConfig(campaign="x", schedule=cron).schedule == cron.strip()


@pytest.mark.parametrize("cron", ["61 * * * *", "0 25 * * *", "0 0 0 * *", "0 0 * 13 *",
                                  "0 0 * * 8", "x * * * *", "0 0 * * FOO", "* * * *",
                                  "0 0 30 2 *", "@fortnightly", "1-99999999999999999999 * * * *"])
def test_bad_schedules(cron):
    with pytest.raises(ValidationError, match="schedule"):
        CampaignConfig(campaign="x", schedule=cron)


@pytest.mark.parametrize("name", ["abc", "a.b", "v1.2.3", "my-campaign_1", "A" * 91, "0"])
def test_good_names(name):
    assert CampaignConfig(campaign=name).campaign == name


@pytest.mark.parametrize("name", ["abc.", ".abc", "a..b", "a b", "a/b", "-a", "_a", "A" * 92,
                                  "é", "a.", "a:b"])
def test_bad_names(name):
    with pytest.raises(ValidationError, match="campaign"):
        CampaignConfig(campaign=name)


@given(st.text(alphabet="ab.-_/: ", min_size=1, max_size=12))
def test_accepted_names_are_their_own_results_folder(name):
    """Two campaigns never share results/<name>/: safe_part(name) is name itself."""
    try:
        CampaignConfig(campaign=name)
    except ValidationError:
        return
    assert safe_part(name) == name


def test_names_used_by_airflow_fit():
    name = "n" * 91
    c = CampaignConfig(campaign=name)
    assert len(f"campaign:{name}") <= 100 and len(c.dag_id) <= 250


@pytest.mark.parametrize(("model", "field", "value"), [
    (Execution, "cycles", True), (Execution, "config_gap_s", False),
    (ExperimentConfig, "batch_size", True), (ExperimentConfig, "max_output_tokens", True),
    (ExperimentConfig, "gpus", [0, True]), (ExperimentConfig, "seed", False),
    (DockerRunner, "gpus", [True]),
])
def test_booleans_are_not_numbers(model, field, value):
    data = {field: value}
    if model is ExperimentConfig:
        data["model"] = "m"
    with pytest.raises(ValidationError, match="boolean"):
        model.model_validate(data)


def test_booleans_still_booleans_and_any():
    from llem_core.campaign.config import Health

    assert Health(allow_foreign_processes=True).allow_foreign_processes is True
    cfg = ExperimentConfig(model="m", extra={"flag": True, "n": [True, 1]})
    assert cfg.extra == {"flag": True, "n": [True, 1]}
    assert DockerRunner(gpus="all").gpus == "all"


def test_timeout_cap_fits_a_timedelta():
    from datetime import timedelta

    from llem_core.campaign.config import MAX_EXPERIMENT_TIMEOUT_S

    assert timedelta(seconds=Execution(experiment_timeout_s=MAX_EXPERIMENT_TIMEOUT_S)
                     .experiment_timeout_s) == timedelta(days=7)
    with pytest.raises(ValidationError):
        Execution(experiment_timeout_s=MAX_EXPERIMENT_TIMEOUT_S + 1)


def test_seeds_fit_every_consumer():
    import random

    import numpy as np

    top = 2**32 - 1
    for cfg in (ExperimentConfig(model="m", seed=top), Execution(seed=top)):
        np.random.default_rng(cfg.seed)
        np.random.seed(cfg.seed)  # the legacy API stops at 2**32 - 1
        random.Random(cfg.seed)


def test_relative_paths_in_axes_resolve_like_base(tmp_path):
    data = {
        "campaign": "t",
        "base": {"model": "./m", "prompts": {"kind": "jsonl", "path": "p.jsonl"}},
        "grid": {"model": ["./m", "org/hub", "/abs/m"],
                 "prompts.path": ["p.jsonl", "sub/q.jsonl"],
                 "prompts": [{"kind": "jsonl", "path": "sub/q.jsonl"}, {"kind": "builtin"}]},
        "experiments": [{"model": "../m2", "prompts": {"kind": "jsonl", "path": "p.jsonl"}}],
    }
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "q.jsonl").write_text('{"text": "b"}\n')
    cfg = validate_campaign_data(data, "f", tmp_path)
    here = tmp_path.resolve()
    assert cfg.base["model"] == str(here / "m")
    assert cfg.grid["model"] == [str(here / "m"), "org/hub", "/abs/m"]
    assert cfg.base["prompts"]["path"] == str(here / "p.jsonl")
    assert cfg.grid["prompts.path"] == [str(here / "p.jsonl"), str(here / "sub" / "q.jsonl")]
    assert cfg.grid["prompts"][0]["path"] == str(here / "sub" / "q.jsonl")
    assert cfg.grid["prompts"][1] == {"kind": "builtin"}
    assert cfg.experiments[0]["model"] == str(here.parent / "m2")
    assert cfg.experiments[0]["prompts"]["path"] == str(here / "p.jsonl")
