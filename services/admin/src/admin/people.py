"""`calltrail user invite|reset|set-password|list|remove`: people who sign in to the
dashboard.

The first user of an organization is made here: `calltrail user invite --org ORG_ID --email
E --role owner` prints a link that lets them choose a password, and mails it too when
SMTP_URL is set (`mailed` says whether it went). `calltrail user reset --email E` prints a
password-reset link for someone who cannot receive mail (the operator hands it over).
A password given on the command line would end up in shell history, so `set-password` reads
it from standard input. Every change is written to the organization's audit log as `cli`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from email.message import EmailMessage
from typing import Any

import asyncpg

from admin.output import CommandError, parse_id, print_json
from calltrail_common import audit, db, people
from calltrail_common.access import ROLES, parse_role
from calltrail_common.mail import Mailer, MailNotSent, invitation
from calltrail_common.settings import Settings


def _org(args: argparse.Namespace) -> uuid.UUID:
    return parse_id(args.org, "--org")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


async def _invite(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    role = parse_role(args.role)
    connection = await db.connect(settings.database_url)
    try:
        try:
            async with connection.transaction():
                link = await people.invite(connection, org_id, args.email, role, None)
                await audit.record(connection, org_id, audit.CLI_ACTOR, "user.invited",
                                   link.email, {"role": role})
        except people.PeopleError as error:
            raise CommandError(str(error)) from None
        except asyncpg.ForeignKeyViolationError:
            raise CommandError(f"no organization {org_id}") from None
        org_name = await connection.fetchval("SELECT name FROM organizations WHERE id = $1",
                                             org_id)
    finally:
        await connection.close()
    url = people.link_url(settings.dashboard_base_url, link)
    print_json({"userId": str(link.user_id), "email": link.email, "role": role,
                 "inviteUrl": url, "expiresAt": link.expires_at_seconds,
                 "mailed": await _mail(settings, invitation(link.email, org_name, role, url,
                                                            None))})


async def _mail(settings: Settings, message: EmailMessage) -> bool:
    """Mail when SMTP is set up; whether it went (the link is printed either way)."""
    mailer = Mailer.from_settings(settings)
    if mailer is None:
        return False
    try:
        await mailer.send(message)
    except MailNotSent as problem:
        sys.stderr.write(f"not mailed: {problem}\n")
        return False
    return True


async def _reset(settings: Settings, args: argparse.Namespace) -> None:
    connection = await db.connect(settings.database_url)
    try:
        link = await people.request_reset(connection, args.email)
    finally:
        await connection.close()
    if link is None:
        raise CommandError(f"no user {args.email!r}")
    print_json({"userId": str(link.user_id), "email": link.email,
                 "resetUrl": people.link_url(settings.dashboard_base_url, link),
                 "expiresAt": link.expires_at_seconds})


async def _set_password(settings: Settings, args: argparse.Namespace) -> None:
    password = _read_password()
    connection = await db.connect(settings.database_url)
    try:
        user = await people.find_user(connection, args.email)
        if user is None:
            raise CommandError(f"no user {args.email!r}: invite them first")
        await people.set_password(connection, user.id, password)
    except people.PeopleError as error:
        raise CommandError(str(error)) from None
    finally:
        await connection.close()
    print_json({"userId": str(user.id), "email": user.email, "passwordSet": True})


async def _list(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    connection = await db.connect(settings.database_url)
    try:
        found = await people.members(connection, org_id)
    finally:
        await connection.close()
    print_json([{"userId": str(m.user_id), "email": m.email, "role": m.role,
                  "joined": m.joined} for m in found])


async def _remove(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    connection = await db.connect(settings.database_url)
    try:
        user = await people.find_user(connection, args.email)
        if user is None:
            raise CommandError(f"{args.email!r} is not a member of {org_id}")
        async with connection.transaction():
            if args.force:  # the operator's way out, e.g. a compromised last owner
                if not await people.remove_member(connection, org_id, user.id):
                    raise CommandError(f"{args.email!r} is not a member of {org_id}")
            else:  # the dashboard's rule: an organization keeps an owner
                await people.change_member(connection, org_id, user.id, None, "owner")
            await audit.record(connection, org_id, audit.CLI_ACTOR, "user.removed",
                               user.email, {"forced": bool(args.force)})
    except people.PeopleError as error:
        raise CommandError(str(error)) from None
    finally:
        await connection.close()
    print_json({"orgId": str(org_id), "email": args.email.strip().lower(), "removed": True})


async def _cancel(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    connection = await db.connect(settings.database_url)
    try:
        async with connection.transaction():
            roles = await people.cancel_invitations(connection, org_id, args.email)
            if not roles:
                raise CommandError(f"no pending invitation of {args.email!r} to {org_id}")
            await audit.record(connection, org_id, audit.CLI_ACTOR,
                               "user.invitation_cancelled",
                               people.normalize_email(args.email), {"roles": roles})
    except people.PeopleError as error:
        raise CommandError(str(error)) from None
    finally:
        await connection.close()
    print_json({"orgId": str(org_id), "email": people.normalize_email(args.email),
                "cancelled": len(roles)})


def add_commands(commands: Any) -> None:
    """Add `user ...` to the CLI's subcommands."""
    user = commands.add_parser("user", help="people who sign in to the dashboard"
                               ).add_subparsers(dest="user_command", required=True)
    invite = user.add_parser("invite", help="invite a person to an organization; prints "
                             "the link that lets them set a password and sign in")
    invite.add_argument("--org", required=True)
    invite.add_argument("--email", required=True)
    invite.add_argument("--role", choices=ROLES, default="viewer")
    invite.set_defaults(run=_invite)
    reset = user.add_parser("reset", help="print a link that lets a user choose a new "
                            "password (works once, for an hour)")
    reset.add_argument("--email", required=True)
    reset.set_defaults(run=_reset)
    set_password = user.add_parser("set-password", help="set a user's password, read from "
                                   "standard input (ends their sessions)")
    set_password.add_argument("--email", required=True)
    set_password.set_defaults(run=_set_password)
    cancel = user.add_parser("cancel-invite", help="end a pending invitation now")
    cancel.add_argument("--org", required=True)
    cancel.add_argument("--email", required=True)
    cancel.set_defaults(run=_cancel)
    listing = user.add_parser("list", help="an organization's members and their roles")
    listing.add_argument("--org", required=True)
    listing.set_defaults(run=_list)
    remove = user.add_parser("remove", help="remove a person from an organization")
    remove.add_argument("--org", required=True)
    remove.add_argument("--email", required=True)
    remove.add_argument("--force", action="store_true",
                        help="remove even the organization's last owner")
    remove.set_defaults(run=_remove)
