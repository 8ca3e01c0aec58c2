"""A campaign's ``alerts:`` section: who is told of a new change point or an overrun.

```yaml
alerts:
  metrics: [j_per_token_raw, tokens_per_s]   # default: the headline metrics
  expected_duration_s: 7200                  # a run still going after this is an alert
  notify:
    - notifier: smtp                         # Airflow's SmtpNotifier
      conn_id: smtp_default
      to: [energy-team@lab.example]
    - notifier: slack                        # Airflow's SlackNotifier (slack provider)
      conn_id: slack_api_default
      channel: "#energy"
```

A notifier is one of the Airflow notifier classes in ``NOTIFIERS``, named by its short
name or its full class path. The campaign gives only addresses and a connection id: the
message is written by llem, and none of these values is rendered as a template (they
are data, like every campaign value). Which connection ids a campaign may name is the
deployment's choice (``LLEM_ALLOWED_NOTIFY_CONNECTIONS``, :mod:`llem_core.campaign.trust`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from llem_core.analysis import metrics as registry
from llem_core.campaign.config_base import Strict

# short name -> (Airflow class path, fields a campaign may set, required fields)
NOTIFIERS: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "smtp": ("airflow.providers.smtp.notifications.smtp.SmtpNotifier",
             frozenset({"to", "cc", "bcc", "from_email"}), frozenset({"to"})),
    "slack": ("airflow.providers.slack.notifications.slack.SlackNotifier",
              frozenset({"channel"}), frozenset({"channel"})),
    "slack_webhook": ("airflow.providers.slack.notifications.slack_webhook."
                      "SlackWebhookNotifier", frozenset(), frozenset()),
}
_BY_PATH = {path: name for name, (path, _, _) in NOTIFIERS.items()}
_EMAIL = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$"
_CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
MAX_DURATION_S = 30 * 86_400.0


class NotifierSettings(Strict):
    """One notifier: its kind, the Airflow connection it sends through, its addressees."""

    notifier: str = Field(..., description="smtp, slack, slack_webhook, or the class path of "
                          "one of them (e.g. airflow.providers.smtp.notifications.smtp."
                          "SmtpNotifier).")
    conn_id: str = Field(..., pattern=_CONN_ID, description="The Airflow connection id.")
    to: list[str] = Field(default_factory=list, max_length=50,
                          description="smtp: addressees.")
    cc: list[str] = Field(default_factory=list, max_length=50)
    bcc: list[str] = Field(default_factory=list, max_length=50)
    from_email: str | None = Field(None, pattern=_EMAIL,
                                   description="smtp: sender; default: the connection's.")
    channel: str | None = Field(None, pattern=r"^[#@]?[A-Za-z0-9_.-]{1,80}$",
                                description="slack: the channel.")

    @field_validator("notifier")
    @classmethod
    def _known(cls, v: str) -> str:
        name = _BY_PATH.get(v, v)
        if name not in NOTIFIERS:
            raise ValueError(f"unknown notifier {v!r}: one of {', '.join(NOTIFIERS)} (or its "
                             "class path)")
        return name

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        import re

        bad = [a for a in v if not re.match(_EMAIL, a)]
        if bad:
            raise ValueError(f"not an e-mail address: {bad[0]!r}")
        return v

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> NotifierSettings:
        _, allowed, required = NOTIFIERS[self.notifier]
        given = {f for f in ("to", "cc", "bcc", "from_email", "channel")
                 if getattr(self, f) not in (None, [])}
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{extra[0]} is not a setting of the {self.notifier} notifier "
                             f"(it takes: {', '.join(sorted(allowed)) or 'only conn_id'})")
        missing = sorted(f for f in required if f not in given)
        if missing:
            raise ValueError(f"the {self.notifier} notifier needs {missing[0]}")
        return self

    @property
    def class_path(self) -> str:
        return NOTIFIERS[self.notifier][0]


class AlertSettings(Strict):
    """What raises an alert for this campaign, and who is told."""

    metrics: list[str] = Field(
        default_factory=lambda: list(registry.headline()), min_length=1,
        description="Metrics whose change points are alerts (default: the headline ones).")
    notify: list[NotifierSettings] = Field(
        default_factory=list, max_length=10,
        description="Told of a new change point and of a run past expected_duration_s.")
    expected_duration_s: float | None = Field(
        None, gt=0.0, le=MAX_DURATION_S,
        description="A run still going this long after it was queued raises an Airflow "
        "deadline alert (the notifiers are told).")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in registry.REGISTRY]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r} (known: "
                             f"{', '.join(registry.REGISTRY)})")
        if len(set(v)) != len(v):
            raise ValueError("a metric is listed twice")
        return v


AlertKind = Literal["change_point", "deadline"]
