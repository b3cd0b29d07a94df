"""A real SMTP server for a test (aiosmtpd on a free loopback port) that keeps what it
receives, and the `SMTP_URL` that reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from calltrail_testkit.processes import free_port

LINK = re.compile(r"https?://\S+/(invite|reset)/[A-Za-z0-9_-]+")


class Mailbox:
    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []

    # aiosmtpd calls its handler's hooks by these names.
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(message)
        return "250 OK"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """The first `count` messages, once they arrived."""
        async with asyncio.timeout(timeout):
            # Filled from aiosmtpd's own thread and loop: an asyncio.Event would not see it.
            while len(self.messages) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self.messages


def link_in(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found is not None, body.get_content()
    return found.group(0)


@contextlib.contextmanager
def receiving_mail() -> Iterator[Mailbox]:
    port = free_port()
    mailbox = Mailbox(f"smtp://127.0.0.1:{port}")
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
