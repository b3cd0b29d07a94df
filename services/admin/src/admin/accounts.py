"""`calltrail vapi connect|disconnect|sync` and `calltrail keys rotate` (contract section 8);
`calltrail vapi wiring|wire|unwire` are `admin.wiring`.

The API key is read from standard input only (never an argument: arguments end up in shell
history and `ps`), checked against Vapi before it is stored, and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from admin import wiring
from admin.broker import confirmed_channel
from admin.output import CommandError, parse_id, print_json
from calltrail_common import db, sync_runs, vapi_keys
from calltrail_common.crypto import KeyRing
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology
from calltrail_common.vapi import VapiClient, VapiError
from calltrail_common.vapi_accounts import (
    AccountError,
    connect_account,
    disconnect_account,
    request_sync,
)

_POLL_SECONDS = 0.5



def _org(args: argparse.Namespace) -> uuid.UUID:
    return parse_id(args.org, "--org")


def _read_api_key() -> str:
    interactive = sys.stdin.isatty()
    key = (getpass.getpass("Vapi private API key: ") if interactive
           else sys.stdin.readline()).strip()
    if not key:
        raise CommandError("no API key on standard input "
                                  "(e.g. `calltrail vapi connect --org ID < key.txt`)")
    return key


async def _connect(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    keyring = KeyRing.from_settings(settings)
    api_key = _read_api_key()
    base_url = (args.api_base_url or settings.vapi_api_base_url).rstrip("/")
    topology = Topology(settings.amqp_prefix)
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        async with httpx.AsyncClient(
                timeout=settings.vapi_request_timeout_seconds) as http, \
                confirmed_channel(settings.amqp_url.get_secret_value(), topology) as channel:
            client = VapiClient(http, api_key, base_url=base_url)
            try:
                account = await connect_account(
                    pool, keyring, client, org_id, api_key,
                    api_base_url=args.api_base_url.rstrip("/") if args.api_base_url else None,
                    channel=channel, topology=topology)
            except VapiError as error:
                raise CommandError(f"Vapi could not be asked: {type(error).__name__}"
                                          ) from None
            except AccountError as error:
                raise CommandError(str(error)) from None
    finally:
        await pool.close()
    print_json({"orgId": str(org_id), "connected": True, "vapiOrgId": account.vapi_org_id,
                 "phoneNumbers": list(account.phone_numbers), "syncId": str(account.sync_id),
                 "unassignedEventsRequeued": account.events_handed_back})


async def _disconnect(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        was_connected = await disconnect_account(pool, org_id)
    finally:
        await pool.close()
    if not was_connected:
        raise CommandError(f"organization {org_id} has no Vapi account")
    print_json({"orgId": str(org_id), "connected": False, "apiKeyDeleted": True})


async def _sync(settings: Settings, args: argparse.Namespace) -> None:
    org_id = _org(args)
    topology = Topology(settings.amqp_prefix)
    pool = await db.create_pool(settings.database_url, max_size=1)
    try:
        async with confirmed_channel(settings.amqp_url.get_secret_value(), topology) as channel:
            try:
                sync_id = await request_sync(pool, org_id, channel=channel, topology=topology)
            except AccountError as error:
                raise CommandError(str(error)) from None
        if not args.wait:
            print_json({"orgId": str(org_id), "syncId": str(sync_id), "status": "queued"})
            return
        run = await _wait_for_run(pool, sync_id, args.timeout)
    finally:
        await pool.close()
    print_json(run)
    if run["status"] != "succeeded":
        raise CommandError(f"sync {sync_id} {run['status']}: {run['reason']}")


async def _wait_for_run(pool: Any, sync_id: uuid.UUID, wait_seconds: float
                        ) -> dict[str, Any]:
    deadline = time.monotonic() + wait_seconds
    while True:
        row = await sync_runs.find(pool, sync_id)
        if row is None:
            raise CommandError(f"sync {sync_id} is not recorded (pruned?)")
        if row["status"] in ("succeeded", "failed"):
            return {"syncId": str(row["id"]), "orgId": str(row["org_id"]),
                    "trigger": row["trigger"], "status": row["status"],
                    "startedAt": row["started_at"].isoformat() if row["started_at"] else None,
                    "finishedAt": row["finished_at"].isoformat(),
                    "callsSeen": row["calls_seen"], "callsPublished": row["calls_published"],
                    "daysUpdated": row["days_updated"], "requests": row["requests"],
                    "reason": row["reason"]}
        if time.monotonic() >= deadline:
            raise CommandError(
                f"sync {sync_id} still {row['status']} after {wait_seconds:g} s "
                "(is calltrail-metrics-sync running?)")
        await asyncio.sleep(_POLL_SECONDS)


async def _keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    keyring = KeyRing.from_settings(settings)
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        rotation = await vapi_keys.rotate_keys(pool, keyring)
    finally:
        await pool.close()
    print_json({"rotated": rotation.rotated, "alreadyCurrent": rotation.already_current,
                 "failed": list(rotation.failed)})
    if rotation.failed:
        raise CommandError(
            f"{len(rotation.failed)} key(s) could not be opened with ENCRYPTION_KEY or "
            "ENCRYPTION_KEY_PREVIOUS; they were left as they are")


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, None]]


def add_commands(commands: Any) -> None:
    """Add `vapi ...` and `keys ...` to the CLI's subcommands."""
    vapi = commands.add_parser("vapi", help="connected Vapi accounts").add_subparsers(
        dest="vapi_command", required=True)
    connect = vapi.add_parser(
        "connect", help="connect an account; its private API key is read from standard input")
    connect.add_argument("--org", required=True)
    connect.add_argument("--api-base-url",
                         help="this account's Vapi API address (default VAPI_API_BASE_URL; "
                              "for a staging or fake Vapi)")
    connect.set_defaults(run=_connect)
    disconnect = vapi.add_parser("disconnect", help="delete the key and stop syncing")
    disconnect.add_argument("--org", required=True)
    disconnect.set_defaults(run=_disconnect)
    sync = vapi.add_parser("sync", help="sync the account now")
    sync.add_argument("--org", required=True)
    sync.add_argument("--wait", action="store_true",
                      help="wait for the run; exit non-zero with its reason if it fails")
    sync.add_argument("--timeout", type=float, default=600.0,
                      help="seconds --wait waits (default 600)")
    sync.set_defaults(run=_sync)
    wiring.add_commands(vapi)

    keys = commands.add_parser("keys", help="encryption of stored API keys").add_subparsers(
        dest="keys_command", required=True)
    keys.add_parser("rotate", help="re-encrypt every stored API key under ENCRYPTION_KEY"
                    ).set_defaults(run=_keys_rotate)
