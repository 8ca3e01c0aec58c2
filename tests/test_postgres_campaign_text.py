"""Campaign text that PostgreSQL cannot store, against a real PostgreSQL dag-processor.

PostgreSQL's JSONB (the serialized DAG) and text columns refuse a NUL character. A
campaign whose description held one became a DAG whose serialization failed inside the
dag-processor's transaction: every DAG of the folder vanished and no import error was
stored (SQLite hides this). Such text is now a file error of that campaign alone.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_distributed import free_port, postgres  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What no stored error line may hold raw: control characters but the newlines between lines.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _campaign(name: str, root: Path, **extra: object) -> str:
    data = {"campaign": name, "base": {"model": str(root / "model"), "device": "cpu",
                                       "energy": {"meter": "none"}},
            "grid": {"seed": [1]}, "execution": {"cycles": 1},
            "runner": {"type": "local"}, "results_dir": str(root / "results"), **extra}
    return yaml.safe_dump(data)


def test_nul_in_a_campaign_loses_only_that_file_on_postgres(postgres, tmp_path):  # noqa: F811
    import psycopg2
    from llem_airflow.stack import AirflowStack

    camps = tmp_path / "campaigns"
    camps.mkdir()
    (camps / "good.yaml").write_text(_campaign("good", tmp_path))
    # YAML escapes: what a file holds as text becomes NUL, bell and RLO once read
    (camps / "bad.yaml").write_text(_campaign("bad", tmp_path) + 'description: "a\\0b\\a"\n')
    (camps / "bidi.yaml").write_text(  # a right-to-left override in the model id
        _campaign("bidi", tmp_path, base={"model": "org/m\u202eevil", "device": "cpu"}))
    dsn = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres}/airflow"
    stack = AirflowStack(home=tmp_path / "home", campaigns=camps, port=free_port(),
                         extra_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": dsn})
    stack.home.mkdir()
    stack.cli("db", "migrate")
    run = subprocess.run([stack.airflow, "dag-processor", "--num-runs", "2"], env=stack.env,
                         capture_output=True, text=True, timeout=300)
    with psycopg2.connect(host="127.0.0.1", port=postgres, user="postgres",
                          dbname="airflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT dag_id FROM dag")
        dags = {r[0] for r in cur.fetchall()}
        cur.execute("SELECT filename, stacktrace FROM import_error")
        errors = cur.fetchall()
    log = (run.stdout + run.stderr)[-3000:]
    assert "llem_good" in dags, log
    assert not {"llem_bad", "llem_bidi"} & dags
    [(filename, trace)] = errors
    assert filename.endswith("llem_campaign_errors.py")
    assert f"{camps / 'bad.yaml'}: description: " in trace and "U+0000" in trace
    assert f"{camps / 'bidi.yaml'}: base.model: " in trace and "U+202E" in trace
    assert not RAW_CONTROL.search(trace), repr(trace)
