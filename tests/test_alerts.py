"""Alerts: a campaign's notifiers, checked as data; messages through a real SMTP server on
127.0.0.1, never rendered as a template; the campaign asset and the deadline on the DAG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from llem_airflow import factory
from llem_airflow.alerts import ASSET_URI, asset_summary, send
from smtp_inbox import free_port, smtp_server

from llem_core.campaign.alerts import AlertSettings
from llem_core.campaign.loading import CampaignFileError, load_campaign
from llem_core.campaign.trust import policy_errors

SMTP = {"notifier": "smtp", "conn_id": "smtp_llem", "to": ["energy@lab.example"]}


@pytest.fixture
def inbox(monkeypatch):
    box, ctl = smtp_server()
    port = ctl.port
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_LLEM", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "llem@lab.example"}}))
    yield box
    ctl.stop()


def body(msg) -> str:
    part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    return part.get_payload(decode=True).decode()


def test_a_message_arrives_as_text_never_as_a_template(inbox):
    problems = send({"notify": [SMTP]}, "llem campaign c: 1 new change point",
                    ["small tokens_per_s {{ 7 * 7 }} <script>x</script>"], None, {})
    assert problems == []
    [msg] = inbox.messages
    assert msg["To"] == "energy@lab.example" and "1 new change point" in msg["Subject"]
    text = body(msg)
    assert "{{ 7 * 7 }}" in text and "49" not in text  # data, not Jinja
    assert "&lt;script&gt;" in text and "<script>" not in text


def test_one_broken_notifier_does_not_silence_the_others(inbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DOWN", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": free_port(),
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "x@lab.example",
                  "timeout": 5, "retry_limit": 0}}))
    down = {**SMTP, "conn_id": "smtp_down"}
    problems = send({"notify": [down, SMTP]}, "t", ["l"], None, {})
    assert len(problems) == 1 and problems[0].startswith("smtp (smtp_down):")
    assert len(inbox.messages) == 1


@pytest.mark.parametrize(("notify", "reason"), [
    ({"notifier": "os.system", "conn_id": "x"}, "unknown notifier"),
    ({"notifier": "smtp", "conn_id": "x"}, "needs to"),
    ({**SMTP, "channel": "#a"}, "channel is not a setting of the smtp notifier"),
    ({**SMTP, "to": ["not-an-address"]}, "not an e-mail address"),
    ({**SMTP, "conn_id": "a b"}, "conn_id"),
    ({**SMTP, "subject": "{{ x }}"}, "subject"),
    ({"notifier": "slack", "conn_id": "s"}, "needs channel"),
])
def test_bad_notifiers_are_refused_by_name(tmp_path, notify, reason):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"campaign": "c", "base": {"model": "org/m"},
                                    "alerts": {"notify": [notify]}}))
    with pytest.raises(CampaignFileError) as err:
        load_campaign(path)
    text = "\n".join(err.value.lines())
    assert "alerts.notify" in text and reason in text


def test_alert_metrics_are_known_ones():
    with pytest.raises(ValueError, match="unknown metric 'watts'"):
        AlertSettings.model_validate({"metrics": ["watts"]})
    assert "tokens_per_s" in AlertSettings().metrics


def test_the_deployment_bounds_the_connections(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"campaign": "c", "base": {"model": "org/m"},
                                    "alerts": {"notify": [SMTP]}}))
    cfg = load_campaign(path).config
    monkeypatch.setenv("LLEM_ALLOWED_NOTIFY_CONNECTIONS", "smtp_team*")
    [e] = policy_errors(cfg)
    assert e.path == "alerts.notify.0.conn_id" and "'smtp_llem' is not allowed" in e.reason
    monkeypatch.setenv("LLEM_ALLOWED_NOTIFY_CONNECTIONS", "smtp_*")
    assert policy_errors(cfg) == []
    monkeypatch.setenv("LLEM_ALLOWED_NOTIFY_CONNECTIONS", " , ")
    [e] = policy_errors(cfg)
    assert "lists nothing" in e.reason


def campaign_folder(tmp_path: Path, alerts: dict | None) -> Path:
    camps = tmp_path / "camps"
    camps.mkdir()
    data = {"campaign": "daily", "schedule": "@daily", "base": {"model": "org/m"},
            "runner": {"type": "local"}, "results_dir": str(tmp_path / "results")}
    if alerts is not None:
        data["alerts"] = alerts
    (camps / "daily.yaml").write_text(yaml.safe_dump(data))
    return camps


def test_dag_publishes_an_asset_and_searches_for_change_points(tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    dags, errors = factory.build_dags(campaign_folder(tmp_path, {
        "metrics": ["tokens_per_s"], "notify": [SMTP], "expected_duration_s": 3600}))
    assert errors == []
    dag = dags["llem_daily"]
    [asset] = dag.get_task("aggregate").outlets
    assert asset.uri == ASSET_URI.format(campaign="daily")
    change = dag.get_task("change_points")
    assert change.metrics == ["tokens_per_s"] and change.alerts["notify"][0]["to"] == [
        "energy@lab.example"]
    [deadline] = dag.deadline
    assert deadline.interval.total_seconds() == 3600
    assert deadline.callback.path == "llem_airflow.alerts.deadline_missed"
    assert deadline.callback.kwargs["alerts"]["notify"][0]["conn_id"] == "smtp_llem"


def test_no_deadline_without_an_expected_duration(tmp_path, monkeypatch):
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    dags, _ = factory.build_dags(campaign_folder(tmp_path, None))
    dag = dags["llem_daily"]
    assert not dag.deadline
    assert dag.get_task("change_points").alerts is None


def test_asset_summary_is_small_json():
    digest = {"run_dir": "/r/c/x", "planned": 4, "measured": 3, "missing": [{"name": "a"}],
              "table": [{"config_name": "a", "n": 3, "publishable": True,
                         "tokens_per_s": {"mean": 10.0, "ci_low": 9.0, "ci_high": 11.0,
                                          "ci_method": "log-t", "estimator": "geometric mean",
                                          "note": "long " * 100}}]}
    s = asset_summary("c", "run1", digest)
    assert s["failed"] == 1 and s["table"][0]["tokens_per_s"]["mean"] == 10.0
    assert "note" not in s["table"][0]["tokens_per_s"]
    json.dumps(s)
