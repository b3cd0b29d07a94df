"""`calltrail`: the admin command line (contract section 8).

Exit status 0 on success; otherwise non-zero with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from calltrail_common import db
from calltrail_common.organizations import (
    create_organization,
    create_token,
    revoke_token,
    webhook_url,
)
from calltrail_common.settings import Settings, SettingsError, load_settings


class CommandError(Exception):
    """A command could not do what was asked; the message is shown as is."""


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    created = await db.create_database_if_missing(settings.database_url)
    applied = await db.migrate(settings.database_url)
    _print_json({"databaseCreated": created, "applied": applied})


async def _org_create(settings: Settings, args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not name:
        raise CommandError("--name must not be empty")
    connection = await db.connect(settings.database_url)
    try:
        org = await create_organization(connection, name)
    finally:
        await connection.close()
    _print_json({
        "orgId": str(org.org_id),
        "apiToken": org.api_token,
        "webhookUrl": webhook_url(settings.public_base_url, org.endpoint_id),
        "webhookSecret": org.webhook_secret,
    })


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"{what} is not a valid id: {value!r}") from None


async def _token_create(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _uuid(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        token_id, token = await create_token(connection, org_id)
    except asyncpg.ForeignKeyViolationError:
        raise CommandError(f"no organization {org_id}") from None
    finally:
        await connection.close()
    _print_json({"tokenId": str(token_id), "apiToken": token})


async def _token_revoke(settings: Settings, args: argparse.Namespace) -> None:
    token_id = _uuid(args.token_id, "TOKEN_ID")
    connection = await db.connect(settings.database_url)
    try:
        if not await revoke_token(connection, token_id):
            raise CommandError(f"no token {token_id}")
    finally:
        await connection.close()
    _print_json({"tokenId": str(token_id), "revoked": True})


Command = Callable[[Settings, argparse.Namespace], Awaitable[None]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calltrail", description="Calltrail administration.")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=_migrate)

    org = commands.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True)
    org_create = org.add_parser("create", help="create an organization")
    org_create.add_argument("--name", required=True)
    org_create.set_defaults(run=_org_create)

    token = commands.add_parser("token", help="tenant API tokens").add_subparsers(
        dest="token_command", required=True)
    token_create = token.add_parser("create", help="issue a new API token")
    token_create.add_argument("--org", required=True)
    token_create.set_defaults(run=_token_create)
    token_revoke = token.add_parser("revoke", help="revoke an API token")
    token_revoke.add_argument("token_id", metavar="TOKEN_ID")
    token_revoke.set_defaults(run=_token_revoke)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run: Command = args.run
    try:
        settings = load_settings()
        asyncio.run(run(settings, args))
    except (CommandError, SettingsError) as error:
        sys.exit(f"calltrail: {error}")
    except (OSError, asyncpg.PostgresError) as error:
        sys.exit(f"calltrail: database error: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
