"""Bad campaign files: every kind is an error naming file, field path and reason."""

from __future__ import annotations

import json

import pytest

from llem_core.cli import main

GOOD = """
campaign: ok
base:
  model: org/model
grid:
  batch_size: [1, 2]
"""

BAD_CASES = [
    # (id, yaml text, expected path, expected words in the reason)
    ("yaml-syntax", "campaign: x\nbase: [unclosed\n", "line ", "invalid YAML"),
    ("top-level-list", "- a\n- b\n", "(top level)", "expected a mapping"),
    ("empty-file", "", "(top level)", "empty document"),
    ("unknown-top-key", "campain: x\nbase: {model: m}\n", "campain", "did you mean 'campaign'"),
    ("unknown-base-key", "campaign: x\nbase: {model: m, batch_sise: 2}\n", "base.batch_sise",
     "did you mean 'batch_size'"),
    ("unknown-nested-key", "campaign: x\nbase: {model: m, decoding: {temprature: 0.5}}\n",
     "base.decoding.temprature", "did you mean 'temperature'"),
    ("wrong-type", "campaign: x\nbase: {model: m, batch_size: four}\n", "base.batch_size",
     "integer"),
    ("out-of-range-cycles", "campaign: x\nbase: {model: m}\nexecution: {cycles: 0}\n",
     "execution.cycles", "greater than or equal to 1"),
    ("too-many-cycles", "campaign: x\nbase: {model: m}\nexecution: {cycles: 101}\n",
     "execution.cycles", "less than or equal to 100"),
    ("bad-dtype", "campaign: x\nbase: {model: m, dtype: float8}\n", "base.dtype", "float16"),
    ("backend-unknown", "campaign: x\nbase: {model: m, backend: tensorrt}\n", "base.backend",
     "not an engine llem knows"),
    ("axis-not-a-field", "campaign: x\nbase: {model: m}\ngrid: {dtyp: [float16]}\n",
     "grid.dtyp", "did you mean 'dtype'"),
    ("axis-nested-not-a-field", "campaign: x\nbase: {model: m}\ngrid: {decoding.temp: [0.1]}\n",
     "grid.decoding.temp", "not a field of decoding"),
    ("grid-value-invalid", "campaign: x\nbase: {model: m}\ngrid: {batch_size: [1, -2]}\n",
     "grid.batch_size[1]", "greater than or equal to 1"),
    ("grid-axis-empty", "campaign: x\nbase: {model: m}\ngrid: {batch_size: []}\n", "grid",
     "no values"),
    ("experiment-invalid", "campaign: x\nbase: {model: m}\nexperiments:\n  - {dtype: float16}\n"
     "  - {dtype: int3}\n", "experiments[1].dtype", "float32"),
    ("experiment-unknown-key", "campaign: x\nbase: {model: m}\nexperiments:\n  - {btach_size: 2}\n",
     "experiments[0].btach_size", "did you mean 'batch_size'"),
    ("campaign-name", "campaign: 'my campaign!'\nbase: {model: m}\n", "campaign", "DAG id"),
    ("schedule", "campaign: x\nschedule: every day\nbase: {model: m}\n", "schedule",
     "cron expression"),
    ("schedule-preset", "campaign: x\nschedule: '@fortnightly'\nbase: {model: m}\n", "schedule",
     "unknown preset"),
    ("missing-model", "campaign: x\nbase: {dtype: float16}\n", "base.model", "required"),
    ("runner-type", "campaign: x\nbase: {model: m}\nrunner: {type: kubernetes}\n", "runner",
     "docker"),
    ("runner-unknown-key", "campaign: x\nbase: {model: m}\nrunner: {type: docker, imgae: a}\n",
     "runner.imgae", "did you mean 'image'"),
    ("jsonl-without-path", "campaign: x\nbase: {model: m, prompts: {kind: jsonl}}\n",
     "base.prompts.path", "required"),
    ("group-by-unknown", "campaign: x\nbase: {model: m}\ngroup_by: [batchsize]\n", "group_by[0]",
     "did you mean 'batch_size'"),
    ("no-valid-combination",
     "campaign: x\nbase: {model: m, max_output_tokens: 8}\ngrid: {min_output_tokens: [9, 10]}\n",
     "grid", "none of the 2 configurations is valid"),
    ("gpus-repeat", "campaign: x\nbase: {model: m, gpus: [0, 0]}\n", "base.gpus", "repeat"),
    ("health-range", "campaign: x\nbase: {model: m}\nhealth: {max_memory_used_pct: 120}\n",
     "health.max_memory_used_pct", "less than or equal to 100"),
]


@pytest.mark.parametrize(("text", "path", "reason"), [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])
def test_bad_campaign_is_a_file_error(write_campaign, capsys, text, path, reason):
    f = write_campaign(text)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{f}: ")]
    assert lines, err
    assert any(ln.startswith(f"{f}: {path}") and reason in ln for ln in lines), err


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: (file): no such file" in capsys.readouterr().err


def test_several_errors_reported_together(write_campaign, capsys):
    f = write_campaign("campaign: x\nbase: {model: m, batch_size: 0, dtype: float8}\n")
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "base.batch_size" in err and "base.dtype" in err


def test_plan_rejects_bad_file_too(write_campaign, capsys):
    f = write_campaign("campaign: x\nbase: {model: m}\ngrid: {dtyp: [float16]}\n")
    assert main(["plan", str(f)]) == 1
    assert "grid.dtyp" in capsys.readouterr().err


def test_good_file_json_summary(write_campaign, capsys):
    f = write_campaign(GOOD)
    assert main(["validate", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["generated"] == 2 and data["valid"] == 2
    assert data["filtered"] == [] and isinstance(data["warnings"], list)
    assert data["dag_id"] == "llem_ok"
