"""When a scheduled campaign runs: its cron's time zone, first and last run time.

The original tool's daemon waited for a start time, repeated the campaign at an interval
and stopped after a total duration. In llem the repeat is the campaign's cron
``schedule``; this window says in which IANA time zone the cron is meant and between
which instants it fires. The DAG factory maps it to the DAG's ``start_date``,
``end_date`` and a time-zone-aware cron timetable.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Names in the system's zone database that are not a place: they follow the machine.
MACHINE_ZONES = ("localtime", "posixrules", "Factory")
# Presets Airflow runs without a cron timetable: no window applies to them.
NOT_CRON = ("@once", "@continuous")
CATCHUP_WARN = 100  # past fire times counted for the catch-up warning (then "more than")


class ScheduleWindow(BaseModel):
    """The cron's zone and the period in which a scheduled campaign runs."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = Field("UTC", description="IANA zone the cron is read in, e.g. Europe/Berlin.")
    start: dt.datetime | None = Field(
        None, description="First instant a run may fire (local time of `timezone` unless "
        "an offset is given); default: when the DAG is first parsed.")
    end: dt.datetime | None = Field(None, description="No run fires after this instant.")
    duration_days: float | None = Field(
        None, gt=0, le=3650, description="Instead of `end`: this many days after `start`.")
    catchup: bool = Field(
        False, description="Run the fire times missed between `start` and now (off: only "
        "the next one).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        # only named IANA zones: 'localtime' or a file path would make the schedule depend
        # on the machine that reads it
        try:
            ZoneInfo(v)
            known = (v == "UTC" or v in available_timezones()) and v not in MACHINE_ZONES \
                and not v.startswith(("posix/", "right/"))
        except (ZoneInfoNotFoundError, ValueError):
            known = False
        if not known:
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as "
                             "'Europe/Berlin' or 'UTC')")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> ScheduleWindow:
        if self.end is not None and self.duration_days is not None:
            raise ValueError("give end or duration_days, not both")
        if self.duration_days is not None and self.start is None:
            raise ValueError("duration_days needs a start")
        start, end = self.start_at(), self.end_at()
        if start and end and end <= start:
            raise ValueError(f"end ({end.isoformat()}) is not after start "
                             f"({start.isoformat()})")
        return self

    def _aware(self, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(self.timezone))

    def start_at(self) -> dt.datetime | None:
        return self._aware(self.start)

    def end_at(self) -> dt.datetime | None:
        if self.duration_days is not None and self.start is not None:
            start = self.start_at()
            assert start is not None
            try:
                return start + dt.timedelta(days=self.duration_days)
            except OverflowError:
                raise ValueError(f"start + duration_days is past the year {dt.MAXYEAR}"
                                 ) from None
        return self._aware(self.end)


# Airflow's own preset table (airflow.utils.dates.cron_presets); croniter reads the rest.
AIRFLOW_CRON_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
                        "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *",
                        "@yearly": "0 0 1 1 *"}


class CronClock:
    """When Airflow's ``CronTriggerTimetable(cron, timezone=zone)`` fires, computed as its
    ``CronMixin`` does (Airflow 3), without importing Airflow.

    The cron is read in the zone's wall clock by croniter on a naive time. A cron that fires
    at least every hour steps by the wall-clock difference in absolute time (so the hour a
    clock change repeats is fired twice, and the skipped hour is not); any other cron's
    wall time is made aware with ``fold=1`` (the second of a repeated time) and a time in
    a skipped hour is moved forward by the gap, as pendulum's ``Timezone.convert`` does.
    tests/test_schedule.py compares this with Airflow's timetable over DST dates in many
    zones.
    """

    def __init__(self, cron: str, zone: str) -> None:
        from croniter import croniter

        self.expression = AIRFLOW_CRON_PRESETS.get(cron, cron)
        self.zone = ZoneInfo(zone)
        self._every_hour = croniter(self.expression).expanded[1] == ["*"]

    def _naive(self, t: dt.datetime) -> dt.datetime:
        return t.astimezone(self.zone).replace(tzinfo=None, fold=0)

    def _aware(self, naive: dt.datetime) -> dt.datetime:
        before = self.zone.utcoffset(naive.replace(fold=0))
        after = self.zone.utcoffset(naive.replace(fold=1))
        if after > before:  # a wall time the clock skips: moved forward by the gap
            naive = naive + (after - before)
        return naive.replace(fold=1, tzinfo=self.zone).astimezone(dt.UTC)

    def next(self, current: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``current`` (UTC)."""
        from croniter import croniter

        naive = self._naive(current)
        scheduled = croniter(self.expression, start_time=naive).get_next(dt.datetime)
        if not self._every_hour:
            return self._aware(scheduled)
        return current.astimezone(dt.UTC) + (scheduled - naive)

    def prev(self, current: dt.datetime) -> dt.datetime:
        """The last fire time strictly before ``current`` (UTC)."""
        from croniter import croniter

        naive = self._naive(current)
        scheduled = croniter(self.expression, start_time=naive).get_prev(dt.datetime)
        if not self._every_hour:
            return self._aware(scheduled)
        return current.astimezone(dt.UTC) - (naive - scheduled)

    def align_next(self, current: dt.datetime) -> dt.datetime:
        """``current`` if Airflow counts it a fire time, else the next one (UTC)."""
        nxt = self.next(current)
        return current.astimezone(dt.UTC) if self.prev(nxt) == current else nxt


def fire_times(cron: str, window: ScheduleWindow, after: dt.datetime | None = None,
               limit: int = 1) -> list[dt.datetime]:
    """The next ``limit`` times Airflow fires ``cron`` inside the window, from ``after``
    (included) or the window's start, in the window's zone: the first is aligned as
    Airflow aligns a DAG's start date, each next one follows the one before."""
    clock = CronClock(cron, window.timezone)
    candidates = [x for x in (after, window.start_at()) if x is not None]
    begin = max(candidates) if candidates else dt.datetime.now(dt.UTC)
    end = window.end_at()
    out: list[dt.datetime] = []
    t = clock.align_next(begin)
    while len(out) < limit and (end is None or t <= end):
        out.append(t.astimezone(clock.zone))
        t = clock.next(t)
    return out


def window_problem(cron: str | None, window: ScheduleWindow | None) -> str | None:
    """Why a schedule and its window cannot work together, or None."""
    if window is None:
        return None
    if cron is None or cron in NOT_CRON:
        what = "no schedule" if cron is None else f"schedule {cron}"
        return f"schedule_window: needs a cron schedule ({what} given)"
    try:
        never = window.end_at() is not None and window.start_at() is not None \
            and not fire_times(cron, window)
    except (OverflowError, ValueError) as exc:  # croniter past the year 9999
        return f"schedule_window: no fire time can be computed ({exc})"
    if never:
        return (f"schedule_window: schedule {cron!r} never fires between {window.start_at()} and "
                f"{window.end_at()} ({window.timezone})")
    return None


def window_warnings(cron: str | None, window: ScheduleWindow | None,
                    now: dt.datetime | None = None) -> list[str]:
    """A window that is over: valid, but the DAG will never run again; say so."""
    if window is None or cron is None or cron in NOT_CRON:
        return []
    end = window.end_at()
    now = now or dt.datetime.now(dt.UTC)
    try:
        over = end is not None and not fire_times(cron, window, after=now)
    except (OverflowError, ValueError):
        return []
    if over:
        return [f"schedule_window: the window ended at {end.isoformat()}: no run will fire"]
    if window.catchup and window.start_at() is not None:
        missed = [t for t in fire_times(cron, window, limit=CATCHUP_WARN + 1) if t < now]
        if len(missed) > 1:
            many = f"more than {CATCHUP_WARN}" if len(missed) > CATCHUP_WARN else len(missed)
            return [f"schedule_window: catchup is on and {many} fire times since "
                    f"{window.start_at().isoformat()} are past: each is a full campaign run"]
    return []

