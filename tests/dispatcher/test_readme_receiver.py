"""The README's receiver, run as written: it accepts what the dispatcher signs and refuses
a forged, altered or replayed request (issue 18: "the README shows a receiver's
verification in a few lines")."""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from dispatcher.messages import DeliveryMessage, webhook_body
from dispatcher.sender import signed_headers

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_" + base64.b64encode(b"r" * 24).decode()


def readme_receiver() -> tuple[Starlette, list[tuple[str, Any]]]:
    """The README's Python block, with its secret and its two placeholders filled."""
    text = README.read_text()
    section = text.split("## Receive Calltrail's webhooks", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    handled: list[tuple[str, Any]] = []
    seen: set[str] = set()

    def already_seen(webhook_id: str) -> bool:
        found = webhook_id in seen
        seen.add(webhook_id)
        return found

    scope: dict[str, Any] = {"Response": Response, "already_seen": already_seen,
                             "handle": lambda kind, data: handled.append((kind, data))}
    exec(code.replace('"whsec_..."', repr(SECRET)), scope)  # noqa: S102 - our own README
    return Starlette(routes=[Route("/calltrail", scope["receive"], methods=["POST"])]), handled


async def test_the_readme_receiver_verifies_what_the_dispatcher_signs() -> None:
    app, handled = readme_receiver()
    event_id = uuid.uuid4()
    body = webhook_body("call.ended", dt.datetime.now(dt.UTC), '{"id":"call-1"}')
    message = DeliveryMessage(uuid.uuid4(), uuid.uuid4(), event_id, body)
    headers = signed_headers(Webhook(SECRET), message)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://receiver") as client:
        first = await client.post("/calltrail", content=body, headers=headers)
        again = await client.post("/calltrail", content=body, headers=headers)  # a retry
        altered = await client.post("/calltrail", content=body.replace(b"call-1", b"call-2"),
                                    headers=headers)
        forged = await client.post("/calltrail", content=body, headers=signed_headers(
            Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()), message))
        old = signed_headers(Webhook(SECRET), message,
                             now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
        replayed = await client.post("/calltrail", content=body, headers=old)
    assert (first.status_code, again.status_code) == (204, 204)
    assert handled == [("call.ended", {"id": "call-1"})]  # once: the retry was deduplicated
    assert (altered.status_code, forged.status_code, replayed.status_code) == (400, 400, 400)
