"""Schedule windows: validation, fire times in the cron's own zone, and the DAG they become."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import yaml

from llem_core.cli import main
from llem_core.config import CampaignConfig
from llem_core.schedule import ScheduleWindow, fire_times

BERLIN = ZoneInfo("Europe/Berlin")


def campaign(**over) -> dict:
    data = {"campaign": "s", "schedule": "0 2 * * *",
            "base": {"model": "org/m", "energy": {"meter": "none"}},
            "schedule_window": {"timezone": "Europe/Berlin", "start": "2026-12-01T00:00",
                                "duration_days": 14}}
    data.update(over)
    return data


def test_two_weeks_at_two_in_berlin():
    cfg = CampaignConfig.model_validate(campaign())
    w = cfg.schedule_window
    times = fire_times(cfg.schedule, w, limit=100)
    assert len(times) == 14
    assert times[0] == dt.datetime(2026, 12, 1, 2, 0, tzinfo=BERLIN)
    assert times[-1] == dt.datetime(2026, 12, 14, 2, 0, tzinfo=BERLIN)
    # 02:00 in Berlin in winter is 01:00 UTC: the cron is read in its own zone
    assert {t.astimezone(dt.UTC).hour for t in times} == {1}
    assert w.end_at() == dt.datetime(2026, 12, 15, 0, 0, tzinfo=BERLIN)


def test_fire_times_follow_daylight_saving():
    w = ScheduleWindow(timezone="Europe/Berlin", start=dt.datetime(2027, 3, 26),
                       end=dt.datetime(2027, 3, 31))
    utc_hours = [t.astimezone(dt.UTC).hour for t in fire_times("0 12 * * *", w, limit=10)]
    assert utc_hours == [11, 11, 10, 10, 10]  # clocks go forward on 28 March 2027


@pytest.mark.parametrize(("window", "schedule", "reason"), [
    ({"timezone": "Mars/Olympus"}, "0 2 * * *", "unknown time zone 'Mars/Olympus'"),
    ({"timezone": "localtime"}, "0 2 * * *", "unknown time zone 'localtime'"),
    ({"start": "2026-12-02", "end": "2026-12-01"}, "0 2 * * *", "is not after start"),
    ({"start": "2026-12-01T00:00", "end": "2026-12-01T01:00"}, "0 2 * * *", "never fires"),
    ({"start": "2026-12-01", "end": "2026-12-09", "duration_days": 3}, "0 2 * * *",
     "not both"),
    ({"duration_days": 3}, "0 2 * * *", "duration_days needs a start"),
    ({"timezone": "UTC"}, None, "needs a cron schedule"),
    ({"timezone": "UTC"}, "@once", "needs a cron schedule"),
    ({"when": "soon"}, "0 2 * * *", "unknown key 'when'"),
])
def test_bad_windows_are_validate_errors(tmp_path, capsys, window, schedule, reason):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(campaign(schedule=schedule, schedule_window=window)))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and reason in err


def test_window_becomes_a_zone_aware_dag(tmp_path, monkeypatch):
    from airflow.sdk import CronTriggerTimetable
    from llem_airflow.factory import build_dags, schedule_text

    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "camps").mkdir()
    (tmp_path / "camps" / "s.yaml").write_text(yaml.safe_dump(campaign()))
    dags, errors = build_dags(tmp_path / "camps")
    assert errors == []
    dag = dags["llem_s"]
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert str(dag.timetable.timezone) == "Europe/Berlin"
    assert dag.start_date == dt.datetime(2026, 12, 1, 0, 0, tzinfo=BERLIN)
    assert dag.end_date == dt.datetime(2026, 12, 15, 0, 0, tzinfo=BERLIN)
    assert dag.catchup is False
    cfg = CampaignConfig.model_validate(campaign())
    line = schedule_text(cfg, now=dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC))
    assert "next run: 2026-12-06T02:00:00+01:00" in line and "Europe/Berlin" in line
    over = schedule_text(cfg, now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert "none (the window is over)" in over
    assert "Europe/Berlin" in dag.doc_md
    assert "Europe/Berlin" in dag.params.get_param("cycles").description  # the trigger form
