"""The error a campaign file raises: one ``file: field.path: reason`` line per problem."""

from __future__ import annotations

from dataclasses import dataclass, field

from llem_core.campaign.text_rules import shown


@dataclass(frozen=True)
class FieldError:
    path: str
    reason: str


@dataclass
class CampaignFileError(Exception):
    """A campaign file that cannot be used; ``str()`` gives one ``file: path: reason`` line each."""

    file: str
    errors: list[FieldError] = field(default_factory=list)

    def lines(self) -> list[str]:
        # Escaped: the lines become an Airflow import error (PostgreSQL refuses NUL) and a
        # page; a field path or file name may quote the very character that was refused.
        return [shown(f"{self.file}: {e.path}: {e.reason}") for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())
