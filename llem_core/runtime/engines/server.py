"""``backend: server``: any OpenAI-compatible server, launched by llem from a command
(``server.command``) or already running (``server.url``). Its caches are unknown, so a
launched one is never kept between experiments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llem_core.runtime.engines.base import Program, Served, ServedEngine
from llem_core.runtime.engines.settings import ServerSettings
from llem_core.runtime.engines.urls import is_loopback, url_host

if TYPE_CHECKING:
    from llem_core.campaign.config import ExperimentConfig


class ServerEngine(ServedEngine):
    name = "server"
    summary = "any OpenAI-compatible server: a command llem launches, or a running URL"
    section = "server"
    settings = ServerSettings
    programs = (Program("command", "server_command", first_of_list=True),)
    env_field = "env"

    def server(self, cfg: ExperimentConfig, cache_root: str | None = None) -> Served:
        return Served.of(self.section_of(cfg))

    def engine_conflicts(self, cfg: ExperimentConfig) -> list[str]:
        server = cfg.server
        if server is None:
            return ["backend server needs a server section (server.command or server.url)"]
        if (server.command is None) == (server.url is None):
            return ["server needs exactly one of server.command and server.url"]
        return []

    def warnings(self, cfg: ExperimentConfig) -> list[str]:
        url = cfg.server.url if cfg.server is not None else None
        if url is None or is_loopback(url_host(url)):
            return []
        return [f"server.url host {url_host(url)!r} is not a loopback address: the latency "
                "measured includes the network, and the meters measure only the GPUs of the "
                "machine the experiment runs on"]


ENGINE = ServerEngine()
