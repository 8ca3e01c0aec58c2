"""Schedule windows: validation, fire times in the cron's own zone, and the DAG they become."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import yaml

from llem_core.campaign.config import CampaignConfig
from llem_core.campaign.schedule import ScheduleWindow, fire_times
from llem_core.cli import main

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
    from airflow.timetables.trigger import CronTriggerTimetable
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
    # the trigger form (Markdown help text)
    assert "Europe/Berlin" in dag.params.get_param("cycles").schema["description_md"]


# --- fire times are Airflow's (issue 22: croniter and the timetable disagreed at DST) -------

DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
             "Pacific/Chatham", "America/St_Johns", "Europe/Dublin", "Africa/Casablanca",
             "Antarctica/Troll", "Australia/Sydney", "America/Havana", "Asia/Gaza"]
CRONS = ["30 2 * * *", "0 * * * *", "30 * * * *", "*/15 * * * *", "0 */2 * * *",
         "15 1,2,3 * * *", "@daily", "0 3 * * *", "59 1 * * *", "45 23 * * 6"]


def _transitions(zone: str, year: int) -> list[dt.datetime]:
    """The instants (UTC, to the hour) at which ``zone`` changes its offset in ``year``."""
    z, out = ZoneInfo(zone), []
    t = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    while t.year == year:
        if (t + dt.timedelta(hours=1)).astimezone(z).utcoffset() != t.astimezone(z).utcoffset():
            out.append(t + dt.timedelta(hours=1))
        t += dt.timedelta(hours=1)
    return out


def _airflow_fire_times(cron: str, zone: str, start: dt.datetime, end: dt.datetime,
                        limit: int = 500) -> list[dt.datetime]:
    """The runs Airflow's scheduler makes of CronTriggerTimetable with catch-up on."""
    import pendulum
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = CronTriggerTimetable(cron, timezone=zone)
    restriction = TimeRestriction(earliest=pendulum.instance(start),
                                  latest=pendulum.instance(end), catchup=True)
    out, last = [], None
    while len(out) < limit:
        info = timetable.next_dagrun_info(last_automated_data_interval=last,
                                          restriction=restriction)
        if info is None:
            return out
        out.append(dt.datetime.fromtimestamp(info.run_after.timestamp(), dt.UTC))
        last = info.data_interval
    return out


def _ours(cron: str, zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    w = ScheduleWindow(timezone=zone, start=start, end=end)
    return [t.astimezone(dt.UTC) for t in fire_times(cron, w, limit=500)]


@pytest.mark.parametrize("zone", DST_ZONES)
def test_fire_times_are_airflows_across_every_clock_change(zone):
    transitions = _transitions(zone, 2026) + _transitions(zone, 2027)
    assert transitions, zone
    for change in transitions:
        start, end = change - dt.timedelta(hours=30), change + dt.timedelta(hours=30)
        for cron in CRONS:
            assert _ours(cron, zone, start, end) == _airflow_fire_times(cron, zone, start, end), \
                (zone, change, cron)


def test_fire_times_are_airflows_anywhere():
    """A property over random zones, starts, lengths and crons."""
    from zoneinfo import available_timezones

    from hypothesis import given, settings
    from hypothesis import strategies as st

    zones = sorted(z for z in available_timezones()
                   if "/" in z and not z.startswith(("posix/", "right/", "Etc/")))

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.sampled_from(zones), st.sampled_from(CRONS),
           st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2028, 1, 1)),
           st.integers(min_value=1, max_value=96))
    def check(zone, cron, start, hours):
        start = start.replace(tzinfo=dt.UTC)
        end = start + dt.timedelta(hours=hours)
        assert _ours(cron, zone, start, end) == _airflow_fire_times(cron, zone, start, end)

    check()


@pytest.mark.parametrize(("window", "fires"), [
    # 02:30 does not exist on 28 March 2027 in Berlin: Airflow runs at 03:30, after the end
    ({"start": "2027-03-28T01:00+01:00", "end": "2027-03-28T03:10+02:00"}, []),
    # 02:30 happens twice on 31 October 2027: Airflow runs once, at the second (UTC+1)
    ({"start": "2027-10-31T02:00+02:00", "end": "2027-10-31T02:59+01:00"},
     ["2027-10-31T02:30:00+01:00"]),
    # ... so a window holding only the first 02:30 never fires
    ({"start": "2027-10-31T02:00+02:00", "end": "2027-10-31T02:59+02:00"}, []),
])
def test_dst_windows_are_judged_as_airflow_fires_them(tmp_path, capsys, window, fires):
    w = ScheduleWindow(timezone="Europe/Berlin", **window)
    assert [t.isoformat() for t in fire_times("30 2 * * *", w, limit=5)] == fires
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(campaign(schedule="30 2 * * *",
                                            schedule_window={"timezone": "Europe/Berlin",
                                                             **window})))
    assert main(["validate", str(path)]) == (0 if fires else 1)
    assert ("never fires" in capsys.readouterr().err) == (not fires)
