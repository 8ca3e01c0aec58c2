"""A campaign's cron schedule: Airflow's CronTriggerTimetable, named with its time zone.

Airflow's DAG list shows a timetable's ``summary`` (with its ``description`` as the
tooltip); CronTriggerTimetable's are the bare cron expression and its English reading, so
``0 3 * * *`` in Europe/Berlin and in UTC looked the same. :class:`ZonedCronTimetable`
adds the zone to both and changes nothing else: its runs are CronTriggerTimetable's
(``llem_core.campaign.schedule`` mirrors them). The DAG processor and the scheduler rebuild a
timetable from the serialized DAG, which needs the class registered by a plugin:
:class:`LlemTimetablePlugin` (entry point ``llem_airflow_timetable``).
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.trigger import CronTriggerTimetable


def zone_name(zone: Any) -> str:
    """``Europe/Berlin``, ``UTC``; a fixed offset as ``+01:00``."""
    name = str(getattr(zone, "name", None) or zone)
    return "UTC" if name == "+00:00" else name


class ZonedCronTimetable(CronTriggerTimetable):
    """CronTriggerTimetable whose summary and description name the zone."""

    def __init__(self, cron: str, *, timezone: Any,
                 interval: datetime.timedelta = datetime.timedelta(),
                 run_immediately: bool | datetime.timedelta = False) -> None:
        super().__init__(cron, timezone=timezone, interval=interval,
                         run_immediately=run_immediately)
        if self.description:  # empty when Airflow cannot read the expression aloud
            self.description = f"{self.description} ({zone_name(self._timezone)})"

    @property
    def timezone(self) -> Any:
        """The zone the cron is read in (the SDK's CronTriggerTimetable has it public)."""
        return self._timezone

    @property
    def summary(self) -> str:
        return f"{self._expression} ({zone_name(self._timezone)})"


class LlemTimetablePlugin(AirflowPlugin):
    name = "llem_airflow_timetable"
    timetables = [ZonedCronTimetable]
