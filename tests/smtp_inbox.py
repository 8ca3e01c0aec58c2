"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps the messages it receives."""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.message import Message

from aiosmtpd.controller import Controller


class Inbox:
    """aiosmtpd handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_server() -> tuple[Inbox, Controller]:
    """A started server and its inbox (stop the controller when done)."""
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    return inbox, ctl
