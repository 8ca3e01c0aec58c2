"""Alerts and assets: what a campaign run tells the rest of Airflow and its people.

- Every campaign run publishes its results as an Airflow Asset (``campaign_asset``): an
  asset event whose ``extra`` is the run's summary (``asset_summary``), so downstream DAGs
  (publish, compare, alert) can be scheduled on ``llem://results/<campaign>``.
- A new change point (``change_task``) and a run that overruns the campaign's
  ``alerts.expected_duration_s`` (an Airflow deadline alert) are sent through the
  campaign's notifiers (``llem_core.campaign.alerts``). The notifier is Airflow's own class; llem
  writes the message and sets only the addressees and the connection, never through a
  template: campaign values are data (the notifier's template fields are emptied, and
  ``notify`` is called, not the notifier's templating ``__call__``).

Parse-time cost: this module imports only the task SDK; notifier classes are imported
when a message is sent.
"""

from __future__ import annotations

import html
import importlib
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

from llem_core.campaign.alerts import AlertSettings, NotifierSettings

ASSET_URI = "llem://results/{campaign}"
DEADLINE_CALLBACK = "llem_airflow.alerts.deadline_missed"


def campaign_asset(campaign: str) -> Asset:
    """The Asset a campaign's runs update: one event per finished aggregate."""
    return Asset(name=f"llem_{campaign}_results", uri=ASSET_URI.format(campaign=campaign),
                 group="llem")


def asset_summary(campaign: str, run_id: str, digest: dict[str, Any]) -> dict[str, Any]:
    """The run's summary for the asset event's ``extra`` (JSON, small)."""
    rows = []
    for r in digest.get("table") or []:
        row = {"config_name": r.get("config_name"), "n": r.get("n"),
               "publishable": r.get("publishable")}
        for key, cell in r.items():
            if isinstance(cell, dict):
                row[key] = {k: cell.get(k) for k in ("mean", "ci_low", "ci_high",
                                                      "ci_method", "estimator")}
        rows.append(row)
    return {"campaign": campaign, "run_id": run_id, "run_dir": digest.get("run_dir"),
            "planned": digest.get("planned"), "measured": digest.get("measured"),
            "failed": len(digest.get("missing") or []), "table": rows}


def _notifier(settings: NotifierSettings, subject: str, text: str, page: str) -> Any:
    module, _, name = settings.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"notifier {settings.notifier}: {settings.class_path} is not "
                           f"installed on this worker ({exc})") from None
    if settings.notifier == "smtp":
        n = cls(to=settings.to, cc=settings.cc or None, bcc=settings.bcc or None,
                from_email=settings.from_email, subject=subject, html_content=page,
                smtp_conn_id=settings.conn_id)
    elif settings.notifier == "slack":
        n = cls(slack_conn_id=settings.conn_id, channel=settings.channel, text=text)
    else:
        n = cls(slack_webhook_conn_id=settings.conn_id, text=text)
    n.template_fields = ()  # the message and addresses are data, never a template
    return n


def message(title: str, lines: list[str], link: str | None) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of an alert; every line is escaped text."""
    text = "\n".join([title, "", *lines, *(["", link] if link else [])])
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    anchor = f'<p><a href="{html.escape(link, quote=True)}">{html.escape(link)}</a></p>' \
        if link else ""
    page = f"<p>{html.escape(title)}</p><ul>{items}</ul>{anchor}"
    return title[:200], text, page


def send(settings: AlertSettings | dict[str, Any], title: str, lines: list[str],
         link: str | None, context: dict[str, Any]) -> list[str]:
    """Send one alert through every notifier; returns one problem line per failure."""
    alerts = AlertSettings.model_validate(settings)
    subject, text, page = message(title, lines, link)
    problems = []
    for s in alerts.notify:
        try:
            _notifier(s, subject, text, page).notify(context)
        except Exception as exc:  # one broken notifier must not silence the others
            problems.append(f"{s.notifier} ({s.conn_id}): {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    return problems


async def deadline_missed(campaign: str, alerts: dict[str, Any],
                          context: dict[str, Any] | None = None) -> str:
    """The deadline alert's callback (run by the triggerer): tell the notifiers."""
    settings = AlertSettings.model_validate(alerts)
    dag_run = (context or {}).get("dag_run") or {}
    run_id = dag_run.get("run_id") if isinstance(dag_run, dict) else None
    title = (f"llem campaign {campaign}: run {run_id or ''} still running after "
             f"{timedelta(seconds=settings.expected_duration_s or 0)}")
    subject, text, page = message(title, ["The run overran alerts.expected_duration_s."],
                                  None)
    sent = 0
    for s in settings.notify:
        n = _notifier(s, subject, text, page)
        if hasattr(n, "async_notify"):
            await n.async_notify(context or {})
        else:
            n.notify(context or {})
        sent += 1
    return f"told {sent} notifier(s)"


def deadline_args(campaign: str, alerts: AlertSettings | None) -> dict[str, Any]:
    """``deadline=`` for the DAG where the campaign expects a duration (Airflow 3.1+)."""
    if alerts is None or alerts.expected_duration_s is None or not alerts.notify:
        return {}
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return {"deadline": DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=alerts.expected_duration_s),
        callback=AsyncCallback(DEADLINE_CALLBACK, kwargs={
            "campaign": campaign, "alerts": alerts.model_dump(mode="json")}),
        name=f"llem_{campaign}_overrun")}
