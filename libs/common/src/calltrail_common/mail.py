"""Mail to people: invitations and password-reset links, sent over SMTP (`SMTP_URL`).

The standard library's smtplib, run in a thread so the event loop never waits on a mail
server. `smtp://` upgrades with STARTTLS when the server offers it and refuses to send
credentials without it; `smtps://` is TLS from the first byte. A mail holds a link that
signs someone in, so neither the link nor its token is ever logged: a failure is reported
by its kind (`MailNotSent`), never with the message.

The api (the People page, "Forgot your password?") and the `calltrail` CLI both send
through here; with no `SMTP_URL` there is no mailer and the caller shows the link instead.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlsplit

from calltrail_common.people import INVITE_LIFETIME, RESET_LIFETIME
from calltrail_common.settings import Settings


class MailNotSent(Exception):
    """The mail server could not be reached, refused us, or offered no TLS for our
    credentials. The message names the kind of failure, never the mail."""


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None
    sender: str
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer | None:
        """The mailer `SMTP_URL` describes; None when it is empty (no mail)."""
        url = settings.smtp_url.get_secret_value()
        if not url:
            return None
        parts = urlsplit(url)
        implicit_tls = parts.scheme == "smtps"
        return cls(host=parts.hostname or "localhost",
                   port=parts.port or (465 if implicit_tls else 587),
                   implicit_tls=implicit_tls,
                   username=None if parts.username is None else unquote(parts.username),
                   password=None if parts.password is None else unquote(parts.password),
                   sender=settings.smtp_from, timeout_seconds=settings.smtp_timeout_seconds)

    async def send(self, message: EmailMessage) -> None:
        """Send `message` (From is set here); MailNotSent when it was not accepted."""
        del message["From"]
        message["From"] = self.sender
        if "Message-ID" not in message:
            message["Message-ID"] = make_msgid(domain="calltrail")
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as error:
            # The exception's text can quote the server's reply to our RCPT/DATA, never
            # the body; only its kind is kept all the same.
            raise MailNotSent(f"the mail server did not take the mail "
                              f"({type(error).__name__})") from None

    def _send_blocking(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_seconds,
                                    context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        with smtp:
            smtp.ehlo()
            if not self.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
                secured = True
            else:
                secured = self.implicit_tls
            if self.username is not None:
                if not secured:
                    raise smtplib.SMTPException("no TLS for the credentials")
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


def invitation(to: str, org_name: str, role: str, url: str, inviter: str | None) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    org_name = " ".join(org_name.split())  # a header holds no line break
    message["Subject"] = f"You are invited to {org_name} on Calltrail"
    by = f"{inviter} invites you" if inviter else "You are invited"
    message.set_content(
        f"{by} to {org_name} on Calltrail, as {role}.\n\n"
        f"Follow this link to join (it works once, for {INVITE_LIFETIME.days} days):\n{url}\n\n"
        "If you did not expect this, ignore this mail.\n")
    return message


def password_reset(to: str, url: str) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = "Reset your Calltrail password"
    message.set_content(
        "Someone, probably you, asked to reset the password of this Calltrail account.\n\n"
        f"Follow this link to choose a new one (it works once, for "
        f"{RESET_LIFETIME.seconds // 60} minutes):\n{url}\n\n"
        "If it was not you, ignore this mail: your password stays as it is.\n")
    return message
