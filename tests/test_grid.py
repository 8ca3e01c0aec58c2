"""Grid expansion: filtering with reasons, warnings, duplicates, names and stable hashes."""

from __future__ import annotations

from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import AIRFLOW_MAX_MAP_LENGTH, config_hash, expand
from llem_core.campaign.loading import validate_campaign_data


def campaign(**kw):
    data = {"campaign": "t", "base": {"model": "org/m"}}
    data.update(kw)
    return validate_campaign_data(data, "t.yaml")


def test_cartesian_product_and_names():
    r = expand(campaign(grid={"dtype": ["float16", "bfloat16"], "batch_size": [1, 4, 8]}))
    assert r.generated == 6 and r.valid == 6
    names = {s.name for s in r.specs}
    assert "dtype=bfloat16,batch_size=4" in names
    assert len({s.config_hash for s in r.specs}) == 6


def test_dotted_axis_sets_nested_field():
    r = expand(campaign(grid={"decoding.temperature": [0.0, 0.7]}))
    temps = sorted(s.config.decoding.temperature for s in r.specs)
    assert temps == [0.0, 0.7]


def test_conflicting_combinations_are_filtered_with_reasons():
    r = expand(campaign(grid={"max_output_tokens": [8, 32], "min_output_tokens": [16]}))
    assert r.generated == 2 and r.valid == 1
    [f] = r.filtered
    assert f.point == {"max_output_tokens": 8, "min_output_tokens": 16}
    assert "min_output_tokens (16) > max_output_tokens (8)" in f.reasons[0]


def test_batch_larger_than_prompts_filtered():
    r = expand(campaign(base={"model": "m", "prompts": {"count": 4}}, grid={"batch_size": [4, 8]}))
    assert [s.config.batch_size for s in r.specs] == [4]
    assert "exceeds the 4 prompts" in r.filtered[0].reasons[0]


def test_soft_problems_are_warnings_naming_configs():
    r = expand(campaign(base={"model": "m", "decoding": {"top_k": 5}, "min_output_tokens": 64},
                        grid={"batch_size": [1, 2]}))
    assert r.valid == 2
    [w] = [w for w in r.warnings if "top_k" in w]
    assert "batch_size=1" in w and "batch_size=2" in w


def test_duplicates_reported_and_kept_once():
    r = expand(campaign(grid={"batch_size": [1, 2]}, experiments=[{"batch_size": 2}]))
    assert r.generated == 3 and r.valid == 2
    [d] = r.duplicates
    assert d.duplicate_of == "batch_size=2" and d.source == "experiments[0]"


def test_explicit_experiments_added_to_grid_with_names():
    r = expand(campaign(grid={"batch_size": [1]},
                        experiments=[{"name": "big", "batch_size": 8}, {"dtype": "float16"}]))
    assert [s.name for s in r.specs] == ["batch_size=1", "big", "dtype=float16"]


def test_hash_is_stable_and_ignores_name():
    a = ExperimentConfig(model="m", batch_size=2, name="one")
    b = ExperimentConfig(model="m", batch_size=2, name="two")
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 12
    # Pinned: a change here silently breaks resume and comparisons of older results.
    assert config_hash(ExperimentConfig(model="org/m")) == config_hash(
        ExperimentConfig.model_validate({"model": "org/m", "dtype": "bfloat16"}))
    assert config_hash(a) != config_hash(ExperimentConfig(model="m", batch_size=3))


def test_same_name_different_config_made_unique():
    r = expand(campaign(experiments=[{"name": "x", "batch_size": 1},
                                     {"name": "x", "batch_size": 2}]))
    names = [s.name for s in r.specs]
    assert len(set(names)) == 2 and all(n.startswith("x#") for n in names)


def test_max_map_length_warning():
    r = expand(campaign(grid={"seed": list(range(AIRFLOW_MAX_MAP_LENGTH + 1))}))
    assert any("max_map_length" in w for w in r.warnings)


def test_relative_model_path_resolved_against_file(tmp_path):
    cfg = validate_campaign_data({"campaign": "t", "base": {"model": "./m"}}, "f", tmp_path)
    assert cfg.base["model"] == str((tmp_path / "m").resolve())
    cfg = validate_campaign_data({"campaign": "t", "base": {"model": "org/m"}}, "f", tmp_path)
    assert cfg.base["model"] == "org/m"
