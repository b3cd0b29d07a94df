"""`calltrail vapi wiring|wire|unwire` (decision 47): where an organization's Vapi
assistants and phone numbers send their calls, and pointing them at its ingest endpoint or
putting back what they had, with the stored key. The changes are audited as `cli`."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import httpx

from admin.output import CommandError, parse_id, print_json
from calltrail_common import audit, db, vapi_keys, vapi_wiring
from calltrail_common.crypto import CryptoError, KeyRing
from calltrail_common.settings import Settings
from calltrail_common.vapi import VapiClient, VapiError

ACCOUNT_BASE_URL = "SELECT api_base_url FROM vapi_accounts WHERE org_id = $1"


async def _client_args(pool: Any, settings: Settings, org_id: uuid.UUID
                       ) -> tuple[str, str]:
    """The stored key and the account's API address; CommandError without a key."""
    async with pool.acquire() as connection:
        try:
            api_key = await vapi_keys.load_key(connection, KeyRing.from_settings(settings),
                                               org_id)
        except CryptoError:
            raise CommandError("the stored API key cannot be opened with ENCRYPTION_KEY"
                               ) from None
        base_url = await connection.fetchval(ACCOUNT_BASE_URL, org_id)
    if api_key is None:
        raise CommandError(f"organization {org_id} has no connected Vapi account")
    return api_key, (base_url or settings.vapi_api_base_url).rstrip("/")


def _item(wiring: vapi_wiring.Wiring) -> dict[str, Any]:
    target = wiring.target
    return {"kind": target.kind, "id": target.vapi_id, "name": target.name,
            "number": target.label, "points": wiring.points, "serverUrl": wiring.server_url,
            "credentialId": wiring.credential_id,
            "credentialCurrent": wiring.credential_current,
            "missingMessages": list(wiring.missing_messages),
            "wiredByCalltrail": wiring.wired_by_calltrail, "complete": wiring.complete}


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    only = getattr(args, "id", None) or None
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        api_key, base_url = await _client_args(pool, settings, org_id)
        async with httpx.AsyncClient(timeout=settings.vapi_request_timeout_seconds) as http:
            client = VapiClient(http, api_key, base_url=base_url)
            try:
                if args.vapi_command == "wiring":
                    found = await vapi_wiring.survey(
                        pool, client, org_id, public_base_url=settings.public_base_url)
                    print_json({"orgId": str(org_id), "endpointUrl": found.endpoint_url,
                                "neededMessages": list(vapi_wiring.NEEDED_MESSAGES),
                                "items": [_item(w) for w in found.items]})
                    return
                if args.vapi_command == "wire":
                    changes = await vapi_wiring.wire(
                        pool, client, org_id, public_base_url=settings.public_base_url,
                        actor=audit.CLI_ACTOR, only=only)
                else:
                    changes = await vapi_wiring.unwire(pool, client, org_id,
                                                       actor=audit.CLI_ACTOR, only=only)
            except VapiError as error:
                raise CommandError(f"Vapi could not be asked or refused: {error}") from None
            except vapi_wiring.WiringError as error:
                raise CommandError(str(error)) from None
    finally:
        await pool.close()
    print_json({"orgId": str(org_id), "changed": [
        {"kind": c.kind, "id": c.vapi_id, "addedMessages": list(c.added_messages)}
        for c in changes]})


def add_commands(vapi: Any) -> None:
    """Add `wiring`, `wire` and `unwire` to `calltrail vapi`."""
    wiring = vapi.add_parser("wiring", help="where the account's assistants and phone "
                             "numbers send their calls")
    wiring.add_argument("--org", required=True)
    wiring.set_defaults(run=_run)
    for name, what in (("wire", "point assistants and numbers at the organization's "
                                "endpoint, with its credential and the messages it reads"),
                       ("unwire", "put back what they had before they were wired")):
        command = vapi.add_parser(name, help=what)
        command.add_argument("--org", required=True)
        command.add_argument("--id", action="append",
                             help="a Vapi assistant or phone-number id (repeat; default all)")
        command.set_defaults(run=_run)
