"""The mailer against a real SMTP server (aiosmtpd): what SMTP_URL means, a mail that
arrives, and credentials never sent without TLS."""

from __future__ import annotations

import pytest

from calltrail_common.mail import Mailer, MailNotSent, invitation, password_reset
from calltrail_testkit.processes import free_port
from tests.conftest import make_settings
from tests.mailbox import link_in, receiving_mail


def _mailer(url: str) -> Mailer | None:
    return Mailer.from_settings(make_settings(smtp_url=url, smtp_timeout_seconds=3))


def test_smtp_url_says_where_and_how() -> None:
    assert _mailer("") is None
    plain = _mailer("smtp://mail.example.com")
    assert plain is not None and (plain.host, plain.port, plain.implicit_tls) == (
        "mail.example.com", 587, False)
    assert plain.username is None and plain.password is None
    implicit = _mailer("smtps://us%40er:p%3Ass@mail.example.com:2465")
    assert implicit is not None and (implicit.port, implicit.implicit_tls) == (2465, True)
    assert (implicit.username, implicit.password) == ("us@er", "p:ss")
    with pytest.raises(ValueError, match="smtp:// or smtps://"):
        _mailer("http://mail.example.com")
    assert "p:ss" not in repr(make_settings(smtp_url="smtp://u:p%3Ass@h"))


async def test_a_mail_arrives_with_its_link() -> None:
    with receiving_mail() as mailbox:
        mailer = _mailer(mailbox.url)
        assert mailer is not None
        await mailer.send(invitation("a@example.com", "Acme\nRoofing", "viewer",
                                     "https://dash.example/invite/abc_DEF-1", "o@example.com"))
        await mailer.send(password_reset("a@example.com", "https://dash.example/reset/xyz"))
        invited, reset = await mailbox.wait_for(2)
    assert invited["Subject"] == "You are invited to Acme Roofing on Calltrail"
    assert invited["From"] == make_settings().smtp_from and invited["Message-ID"]
    assert link_in(invited) == "https://dash.example/invite/abc_DEF-1"
    assert link_in(reset) == "https://dash.example/reset/xyz"


async def test_credentials_are_never_sent_without_tls_and_failures_say_only_their_kind(
        ) -> None:
    with receiving_mail() as mailbox:  # offers no STARTTLS
        mailer = _mailer(mailbox.url.replace("smtp://", "smtp://user:secret@"))
        assert mailer is not None
        with pytest.raises(MailNotSent) as refused:
            await mailer.send(password_reset("a@example.com", "https://d.example/reset/t"))
        assert "secret" not in str(refused.value) and "/reset/" not in str(refused.value)
        assert mailbox.messages == []
    nowhere = _mailer(f"smtp://127.0.0.1:{free_port()}")
    assert nowhere is not None
    with pytest.raises(MailNotSent, match="did not take the mail"):
        await nowhere.send(password_reset("a@example.com", "https://d.example/reset/t"))
