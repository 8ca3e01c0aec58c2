"""Hostile campaign files through `llem validate` and build_dags: the same verdict."""

from __future__ import annotations

from pathlib import Path

import pytest
from llem_airflow import factory

from llem_core.campaign import discovery
from llem_core.cli import main
from tests.test_airflow_dag import _cache, folder, write  # noqa: F401  (fixtures)


def _both(folder: Path, path: Path, capsys) -> tuple[int, list[str], set[str]]:  # noqa: F811
    dags, errors = factory.build_dags(folder)
    capsys.readouterr()
    rc = main(["validate", str(path)])
    return rc, errors, set(dags)


@pytest.mark.parametrize("window", [
    {"start": "9999-12-31T00:00", "duration_days": 2},
    {"start": "9999-12-31T20:00", "end": "9999-12-31T23:00", "timezone": "Etc/GMT+12"},
])
def test_a_window_past_the_year_9999_is_a_file_error_not_a_crash(folder, capsys, window):  # noqa: F811
    # start + duration_days overflowed inside the campaign model's validator: the
    # OverflowError escaped iter_campaigns, so build_dags lost every campaign and
    # `llem validate` died with a traceback.
    write(folder, "good")
    path = write(folder, "late", schedule="0 22 * * *", schedule_window=window)
    rc, errors, dags = _both(folder, path, capsys)
    assert dags == {"llem_good"}
    assert len(errors) == 1 and errors[0].startswith(f"{path}: ")
    assert "schedule_window" in errors[0]
    assert rc == 1 and "schedule_window" in capsys.readouterr().err


def test_any_unexpected_error_of_one_file_loses_only_that_file(folder, monkeypatch):  # noqa: F811
    write(folder, "good")
    bad = write(folder, "bad")
    real = discovery.parse_campaign_text

    def parse(text: str, path: Path):
        if Path(path) == bad:
            raise RecursionError("simulated surprise")
        return real(text, path)

    monkeypatch.setattr(discovery, "parse_campaign_text", parse)
    campaigns, errors = discovery.iter_campaigns(folder)
    assert [c.name for c in campaigns] == ["good"]
    assert [str(e) for e in errors] == [
        f"{bad}: (file): cannot be loaded: RecursionError: simulated surprise"]


def _dangling(p: Path) -> None:
    p.symlink_to(p.parent / "gone.yaml")


def _fifo(p: Path) -> None:
    import os

    os.mkfifo(p)


@pytest.mark.parametrize(("make", "reason"), [
    (_dangling, "(file): broken symlink"),
    (Path.mkdir, "(file): a folder, not a file"),
    (_fifo, "(file): a special file, not a file"),
])
def test_a_campaign_name_that_is_no_regular_file_is_an_error_in_both(folder, capsys, make,  # noqa: F811
                                                                     reason):
    # build_dags skipped a broken symlink or a folder named *.yaml silently while
    # `llem validate` refused it; a FIFO made `llem validate` block forever.
    write(folder, "good")
    path = folder / "odd.yaml"
    make(path)
    rc, errors, dags = _both(folder, path, capsys)
    assert dags == {"llem_good"}
    assert errors == [f"{path}: {reason}"]
    assert rc == 1 and f"{path}: {reason}" in capsys.readouterr().err


def test_a_symlinked_campaign_file_builds(folder, capsys):  # noqa: F811
    target = write(folder, "real").rename(folder.parent / "real.txt")
    path = folder / "linked.yaml"
    path.symlink_to(target)
    rc, errors, dags = _both(folder, path, capsys)
    assert errors == [] and dags == {"llem_real"} and rc == 0


def test_compare_to_naming_no_configuration_is_refused_by_both(folder, capsys):  # noqa: F811
    # A typo in compare_to was accepted: the campaign ran, and only its aggregate said
    # "no comparison" at the end.
    write(folder, "good", compare_to="max_output_tokens=8")
    path = write(folder, "typo", compare_to="max_output_tokens=80")
    rc, errors, dags = _both(folder, path, capsys)
    assert dags == {"llem_good"}
    assert len(errors) == 1 and errors[0].startswith(f"{path}: compare_to: 'max_output_tokens=80'")
    assert rc == 1 and "compare_to" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "reason"), [
    (lambda text: text.replace('"schema_version": 1', '"schema_version": 2'), "schema_version 2"),
    (lambda text: text.replace('"raw_j": null', '"raw_j": NaN'), "NaN"),
])
def test_resume_never_reuses_a_result_the_aggregate_would_refuse(folder, change, reason):  # noqa: F811
    # read_result skipped the schema-version check and accepted NaN: resume returned a
    # newer-schema result as measured, the aggregate then refused it as unreadable and
    # reported the run missing, and clearing the task reused it again.
    from airflow.sdk.exceptions import AirflowException
    from llem_airflow.operators import LlemLocalOperator

    from llem_core.campaign.planning import PlannedRun
    from tests.test_airflow_dag import plan_of, write_synthetic

    write(folder, "a", runner={"type": "local"})
    raw = plan_of(folder)["cycle_1"][0]
    path = Path(raw["result_path"])
    write_synthetic(PlannedRun.model_validate(raw))
    text = change(path.read_text())
    path.write_text(text)
    op = LlemLocalOperator(task_id="experiment", run=raw, python="/nonexistent/python")
    with pytest.raises(AirflowException, match=f"not a valid result.*{reason}.*it is kept"):
        op.execute({})
    assert path.read_text() == text


def test_experiments_number_gpus_as_nvml_and_the_pools_do(folder):  # noqa: F811
    # gpus index the GPUs as NVML does (the pool, the lock, the meter). The local runner
    # passed the worker's CUDA_VISIBLE_DEVICES=1 on, so torch's cuda:0 was host GPU 1
    # while GPU 0 was locked and metered; CUDA's default order (fastest first) can
    # renumber mixed GPUs in a container too.
    from llem_airflow.operators import local_environment

    from tests.test_airflow_dag import execute_docker_run

    env = local_environment("{}", {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1",
                                   "NVIDIA_VISIBLE_DEVICES": "1",
                                   "CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert "CUDA_VISIBLE_DEVICES" not in env and "NVIDIA_VISIBLE_DEVICES" not in env
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

    _, _, client, _ = execute_docker_run(folder)
    assert client.create_container.call_args.kwargs["environment"]["CUDA_DEVICE_ORDER"] == \
        "PCI_BUS_ID"


def test_validate_agrees_with_the_dag_build_on_a_campaign_name_taken_in_its_folder(
        folder, capsys):  # noqa: F811
    # build_dags refuses the second file claiming a name; `llem validate` on that file
    # alone said it was fine.
    second = write(folder, "same").rename(folder / "z-copy.yaml")
    first = write(folder, "same")
    rc, errors, dags = _both(folder, second, capsys)
    assert dags == {"llem_same"}
    assert errors == [f"{second}: campaign: 'same' is already used by {first}"]
    assert rc == 1 and errors[0] in capsys.readouterr().err
    assert main(["validate", str(first)]) == 0


def test_a_schedule_window_that_is_over_is_a_warning(folder, capsys):  # noqa: F811
    # Valid, but the DAG will never run: validate said nothing, so a campaign whose
    # window had passed was silently never measured.
    path = write(folder, "past", schedule="0 2 * * *",
                 schedule_window={"start": "2001-01-01T00:00", "duration_days": 3})
    assert main(["validate", str(path)]) == 0
    assert "schedule_window: the window ended at 2001-01-04T00:00:00+00:00: no run will " \
        "fire" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "kind"), [
    ("{d: !!set {alpha, beta, gamma}}", "a set"),
    ("{d: [1, !!binary aGVsbG8=]}", "binary data"),
])
def test_extra_holding_a_set_or_bytes_is_refused(folder, capsys, extra, kind):  # noqa: F811
    # A !!set in extra was accepted, and its order (so the config hash) changed with
    # each process's hash seed: every run of the campaign started a new history series.
    write(folder, "good")
    path = folder / "set.yaml"
    path.write_text((folder / "good.yaml").read_text().replace("campaign: good",
                                                               "campaign: set")
                    .replace("batch_size: 1", f"batch_size: 1\n  extra: {extra}"))
    rc, errors, dags = _both(folder, path, capsys)
    assert dags == {"llem_good"} and rc == 1
    assert len(errors) == 1 and errors[0].startswith(f"{path}: base.extra")
    assert kind in errors[0]


@pytest.mark.parametrize("junk", ['[1, 2]', '{"summary": {"names": 3}}', '{"error": [1]}', '""'])
def test_a_corrupt_grid_cache_entry_is_expanded_again(folder, capsys, junk):  # noqa: F811
    # A cache entry of the wrong shape (valid JSON) broke that campaign's DAG with an
    # AttributeError/ValidationError while `llem validate` accepted the file, until the
    # file changed.
    from llem_airflow.grid_cache import cache_dir

    path = write(folder, "a")
    assert set(factory.build_dags(folder)[0]) == {"llem_a"}
    [entry] = list(cache_dir().glob("*.json"))
    entry.write_text(junk)
    rc, errors, dags = _both(folder, path, capsys)
    assert rc == 0 and errors == [] and dags == {"llem_a"}


def test_catchup_over_a_past_window_start_is_a_warning(folder, capsys):  # noqa: F811
    # catchup: true with a start years ago queues a full campaign run per missed fire
    # time; validate said nothing.
    path = write(folder, "catch", schedule="0 2 * * *",
                 schedule_window={"start": "2020-01-01T00:00", "catchup": True})
    assert main(["validate", str(path)]) == 0
    assert "catchup is on and more than 100 fire times since 2020-01-01T00:00:00+00:00 " \
        "are past" in capsys.readouterr().out


@pytest.mark.parametrize(("target", "other"), [
    ("{results}", "results_dir"), ("/models-cache", "runner.model_cache"),
    ("/data/", "runner.mounts[0]")])
def test_a_mount_at_a_container_path_already_taken_is_refused(folder, capsys, target, other):  # noqa: F811
    # Docker refuses two mounts at one container path: validate accepted the campaign and
    # every experiment then failed to start.
    results = str(folder.parent / "results")
    src = str(folder.parent / "model")
    mounts = [{"source": src, "target": "/data"}, {"source": src,
                                                    "target": target.format(results=results)}]
    path = write(folder, "m", runner={"type": "docker", "image": "img:1", "gpus": [2],
                                      "host": "srv", "model_cache": src, "mounts": mounts})
    rc, errors, dags = _both(folder, path, capsys)
    assert rc == 1 and dags == set()
    assert errors == [f"{path}: runner.mounts[1].target: {target.format(results=results)} "
                      f"is already the container path of {other}"]
