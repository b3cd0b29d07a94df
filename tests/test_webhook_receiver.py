"""The test kit's webhook receiver, driven from another process's point of view: its admin
routes set how a path answers and report what came, verified with `standardwebhooks`."""

from __future__ import annotations

import datetime as dt

import httpx
from standardwebhooks import Webhook

from calltrail_testkit.webhook_receiver import WebhookReceiver
from tests.support.dispatcher import new_secret


def _signed(secret: str, webhook_id: str, body: bytes) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, now, body)}


def test_the_admin_routes_set_answers_and_report_what_came() -> None:
    secret = new_secret()
    with WebhookReceiver() as receiver:
        admin = f"http://127.0.0.1:{receiver.port}/_receiver"
        with httpx.Client(timeout=5) as http:
            assert http.post(f"{admin}/behave", json={
                "path": "/hooks/a", "secret": secret, "status": 503}).status_code == 200
            assert http.post(f"{admin}/behave", json={
                "path": "x", "colour": "red"}).status_code == 400
            body = b'{"type":"call.ended"}'
            for webhook_id, signing in (("e1", secret), ("e1", secret), ("e2", new_secret())):
                answer = http.post(receiver.url("hooks/a"), content=body,
                                   headers=_signed(signing, webhook_id, body))
                assert answer.status_code == 503
            assert http.post(receiver.url("other"), content=b"{}").status_code == 200
            assert http.get(f"{admin}/stats").json() == {
                "hooks/a": {"received": 3, "unique": 2, "unverified": 1, "body_bytes_sent": 0},
                "other": {"received": 1, "unique": 0, "unverified": 0, "body_bytes_sent": 0}}
            received = http.get(f"{admin}/received", params={"path": "hooks/a"}).json()
    assert [(r["id"], r["verified"]) for r in received] == [
        ("e1", True), ("e1", True), ("e2", False)]
    assert receiver.ids("hooks/a") == {"e1", "e2"}
