"""Rules relating the campaign's runner to what its experiments ask for.

The Docker runner starts every experiment (and the experiment host) with no network
(``network_mode: none``): a server that is already running (``server.url``) cannot be
reached from there, not even on the container's own loopback, so such a campaign could
never run. Checked on the campaign as written, so the error names the field that sets it.
"""

from __future__ import annotations

from llem_core.campaign.config import CampaignConfig, DockerRunner
from llem_core.campaign.errors import FieldError
from llem_core.campaign.paths import field_values


def runner_reach_errors(cfg: CampaignConfig) -> list[FieldError]:
    """A ``server.url`` anywhere in a campaign whose runner is Docker."""
    if not isinstance(cfg.runner, DockerRunner):
        return []
    return [FieldError(where, "the Docker runner's containers have no network "
                              "(network_mode none): a running server cannot be reached from "
                              "them; use server.command (launched inside the container) or "
                              "runner.type local")
            for where, value in field_values(cfg, "server.url") if value is not None]
