"""The dashboard's tenant matrix: every page and form the app routes (read from its route
table, so a new one cannot be left out) for each role of the organization, for a member
of another organization holding this one's ids, and for nobody signed in.

Each route names the action it needs (`calltrail_common.access.Action`): a role that
allows it is served, one that does not gets 403 and changes nothing; a stranger gets 404
for another organization's ids and sees nothing of it anywhere; nobody signed in is sent
to the sign-in page.
"""

from __future__ import annotations

import contextlib
import re
import uuid

import asyncpg
import httpx

from api.app import create_app
from calltrail_common import outbound_endpoints, people
from calltrail_common.access import Action, Role, may
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_organization
from tests.api.conftest import insert_call, insert_lead
from tests.api.test_security import _walk
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client
from tests.support.delivery_log import insert_delivery

PUBLIC = "public"
AGENCY = "agency"  # an agency's people only: any other organization's answer 404
# Every dashboard route and what it needs. A route missing here fails the test: say what
# it needs before it ships.
ROUTES: dict[tuple[str, str], Action | str] = {
    ("GET", "/"): Action.READ,
    ("GET", "/calls"): Action.READ,
    ("GET", "/calls/export"): Action.EXPORT,
    ("GET", "/calls/{call_id}"): Action.READ,
    ("GET", "/calls/{call_id}/recording"): Action.READ,
    ("GET", "/leads"): Action.READ,
    ("GET", "/leads/export"): Action.EXPORT,
    ("GET", "/leads/{lead_id}"): Action.READ,
    ("POST", "/leads/{lead_id}/erase"): Action.ERASE_PERSONAL_DATA,
    ("GET", "/usage"): Action.READ,
    ("GET", "/settings"): Action.READ,
    ("GET", "/settings/webhook"): Action.READ,
    ("POST", "/settings/connect"): Action.MANAGE_VAPI_KEY,
    ("POST", "/settings/disconnect"): Action.MANAGE_VAPI_KEY,
    ("POST", "/settings/sync"): Action.SYNC,
    ("POST", "/settings/webhook/rotate"): Action.MANAGE_SECRET,
    ("POST", "/settings/webhook/revoke"): Action.MANAGE_SECRET,
    ("GET", "/settings/people"): Action.READ,
    ("POST", "/settings/people/invite"): Action.MANAGE_PEOPLE,
    ("POST", "/settings/people/role"): Action.MANAGE_PEOPLE,
    ("POST", "/settings/people/remove"): Action.MANAGE_PEOPLE,
    ("POST", "/settings/people/cancel"): Action.MANAGE_PEOPLE,
    ("GET", "/settings/tokens"): Action.MANAGE_TOKENS,
    ("POST", "/settings/tokens"): Action.MANAGE_TOKENS,
    ("POST", "/settings/tokens/{token_id}/revoke"): Action.MANAGE_TOKENS,
    ("GET", "/settings/audit"): Action.READ_AUDIT,
    ("GET", "/settings/outbound-webhooks"): Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks"): Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("GET", "/settings/outbound-webhooks/{endpoint_id}"): Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}"): Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}/disable"):
        Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}/enable"):
        Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}/rotate-secret"):
        Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}/delete"):
        Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("POST", "/settings/outbound-webhooks/{endpoint_id}/deliveries/{delivery_id}/send-again"):
        Action.MANAGE_OUTBOUND_WEBHOOKS,
    ("GET", "/settings/success"): Action.READ,
    ("POST", "/settings/success"): Action.SET_SUCCESS_MEASURE,
    ("POST", "/settings/success/clear"): Action.SET_SUCCESS_MEASURE,
    ("POST", "/settings/time-zone"): Action.SET_TIME_ZONE,
    ("GET", "/settings/vapi-wiring"): Action.WIRE_VAPI,
    ("POST", "/settings/vapi-wiring/wire"): Action.WIRE_VAPI,
    ("POST", "/settings/vapi-wiring/unwire"): Action.WIRE_VAPI,
    ("POST", "/settings/retention"): Action.ERASE_PERSONAL_DATA,
    ("POST", "/switch"): Action.READ,
    ("GET", "/clients"): AGENCY,
    ("GET", "/brand/{name}"): PUBLIC,
    ("GET", "/reset"): PUBLIC,
    ("POST", "/reset"): PUBLIC,
    ("GET", "/reset/{token}"): PUBLIC,
    ("POST", "/reset/{token}"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/invite/{token}"): PUBLIC,
    ("POST", "/invite/{token}"): PUBLIC,
    ("GET", "/live"): Action.READ,  # its stream, /api/live, is in tests/api/test_security.py
}
ROLES: tuple[Role, ...] = ("viewer", "admin", "owner")


def dashboard_routes(dashboard: Dashboard) -> list[tuple[str, str]]:
    app = create_app(dashboard.settings, KeyRing.from_settings(dashboard.settings))
    found = sorted({(method, route.path) for route in _walk(app.routes)
                    if not route.path.startswith("/api/")
                    and route.path not in ("/healthz", "/readyz")
                    for method in route.methods if method != "HEAD"})
    unclassified = set(found) - set(ROUTES)
    assert not unclassified, f"say what these routes need in ROUTES: {sorted(unclassified)}"
    assert set(ROUTES) <= set(found), set(ROUTES) - set(found)
    return found


async def _outbound(connection: asyncpg.Connection, org_id: uuid.UUID
                    ) -> tuple[dict[str, str], str]:
    """An outbound webhook endpoint with a dead delivery: their ids, and its secret."""
    made = await outbound_endpoints.create(
        connection, org_id, url=f"https://crm-{org_id.hex[:8]}.example.com/hook",
        event_types=["call.ended"])
    delivery = await insert_delivery(connection, org_id, made.endpoint.id)
    return {"endpoint_id": str(made.endpoint.id), "delivery_id": str(delivery)}, made.secret


def _path(template: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


PENDING = "pending@acme-roofing.example"  # invited, not joined: the email of every form


def _form(csrf: str, org_id: uuid.UUID, target: uuid.UUID) -> dict[str, str]:
    """Every field any form takes, naming this organization's things."""
    return {"csrf": csrf, "apiKey": "not-a-key", "email": PENDING,
            "role": "viewer", "user": str(target), "org": str(org_id), "name": "matrix",
            "overlapHours": "24", "source": "output:matrix-output"}


async def _request(client: httpx.AsyncClient, method: str, path: str, form: dict[str, str]
                   ) -> httpx.Response:
    return await client.request(method, path, data=form if method == "POST" else None)


async def test_every_route_for_every_role_and_a_stranger(dashboard: Dashboard) -> None:
    routes = [r for r in dashboard_routes(dashboard) if ROUTES[r] != PUBLIC]
    org_id = dashboard.org.org_id
    outbound, outbound_secret = await _outbound(dashboard.connection, org_id)
    ids = {"call_id": dashboard.call_ids[0], "lead_id": str(dashboard.lead_id),
           "token_id": str(dashboard.org.token_id), **outbound}
    secrets = [dashboard.org.webhook_secret, dashboard.org.api_token, outbound_secret]
    target = await add_person(dashboard.connection, org_id, "target@acme-roofing.example",
                              "viewer")
    for role in ROLES:
        email = f"{role}-{uuid.uuid4().hex[:6]}@acme-roofing.example"
        await add_person(dashboard.connection, org_id, email, role)
        await add_person(dashboard.connection, org_id, "target@acme-roofing.example",
                         "viewer")
        await people.invite(dashboard.connection, org_id, PENDING, "viewer", None)
        client, csrf = await signed_in_client(dashboard, email)
        async with contextlib.aclosing(client):
            for method, template in routes:
                action = ROUTES[method, template]
                response = await _request(client, method, _path(template, ids),
                                          _form(csrf, org_id, target))
                what = (role, method, template, response.status_code)
                if action == AGENCY:
                    assert response.status_code == 404, what
                    continue
                assert isinstance(action, Action)
                if may(role, action):
                    assert response.status_code in (200, 303, 400, 409), what
                else:
                    assert response.status_code == 403, what
                if not may(role, Action.SEE_SECRETS):
                    assert all(s not in response.text for s in secrets), what

    # A member of another organization, holding this one's ids.
    other = await create_organization(dashboard.connection, "Bravo Plumbing")
    await insert_lead(dashboard.connection, other.org_id, "+14155550999", name="Bravo Lead")
    await insert_call(dashboard.connection, other.org_id, customer_number="+14155550999")
    stranger_email = "owner@bravo-plumbing.example"
    await add_person(dashboard.connection, other.org_id, stranger_email, "owner")
    await add_person(dashboard.connection, org_id, "target@acme-roofing.example", "viewer")
    await people.invite(dashboard.connection, org_id, PENDING, "viewer", None)
    marks = [*dashboard.call_ids, str(dashboard.lead_id), "Dana Whitfield", "Acme Roofing",
             dashboard.org.webhook_secret, dashboard.org.api_token, "+14155550142",
             "target@acme-roofing.example", str(dashboard.org.token_id), outbound_secret,
             *outbound.values(), f"crm-{org_id.hex[:8]}"]
    before = await _state_of(dashboard, org_id)
    stranger, csrf = await signed_in_client(dashboard, stranger_email)
    async with contextlib.aclosing(stranger):
        for method, template in routes:
            response = await _request(stranger, method, _path(template, ids),
                                      _form(csrf, org_id, target))
            what = (method, template, response.status_code)
            if "{" in template or template == "/switch" or ROUTES[method, template] == AGENCY:
                assert response.status_code == 404, what
            else:
                assert response.status_code < 500, what
            leaked = [m for m in marks if m in response.text]
            assert not leaked, (method, template, leaked)
    # Still looking at its own organization: the switch changed nothing.
    assert await dashboard.connection.fetchval(
        "SELECT array_agg(DISTINCT s.org_id) FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.email = $1", stranger_email) == [other.org_id]
    assert await _state_of(dashboard, org_id) == before

    # Nobody signed in: sent to sign in, whatever the route.
    async with httpx.AsyncClient(base_url=dashboard.url) as anonymous:
        for method, template in routes:
            response = await anonymous.request(method, _path(template, ids))
            assert response.status_code == 303, (method, template)
            assert response.headers["location"] == "/login"


async def _state_of(dashboard: Dashboard, org_id: uuid.UUID) -> tuple[object, ...]:
    """What a stranger's requests must leave as they were."""
    connection = dashboard.connection
    return (
        await connection.fetchval("SELECT secret FROM webhook_endpoints WHERE org_id = $1",
                                  org_id),
        await connection.fetchval("SELECT count(*) FROM calls WHERE org_id = $1", org_id),
        tuple(await connection.fetch(
            "SELECT user_id, role FROM memberships WHERE org_id = $1 ORDER BY user_id",
            org_id)),
        tuple(await connection.fetch(
            "SELECT id, revoked_at FROM api_tokens WHERE org_id = $1 ORDER BY id", org_id)),
        await connection.fetchval(
            "SELECT count(*) FROM user_links WHERE org_id = $1 AND used_at IS NULL "
            "AND expires_at > now()", org_id),
        tuple(await connection.fetch(
            "SELECT id, url, description, event_types, secret, disabled_at FROM "
            "outbound_endpoints WHERE org_id = $1 ORDER BY id", org_id)),
        tuple(await connection.fetch(
            "SELECT d.id, d.state, d.queued_at FROM outbound_deliveries d JOIN "
            "outbound_endpoints e ON e.id = d.endpoint_id WHERE e.org_id = $1 ORDER BY d.id",
            org_id)),
        await connection.fetchrow("SELECT kind, source_id, pass_mark FROM success_measures"
                                  " WHERE org_id = $1", org_id),
    )


async def test_agency_client_and_stranger(dashboard: Dashboard) -> None:
    """An agency's people open its clients; a client's people open only their own; nobody
    else opens either, by switching or by ids."""
    connection = dashboard.connection
    agency = await create_organization(connection, "Northwind Agency")
    await connection.execute("UPDATE organizations SET kind = 'agency' WHERE id = $1",
                             agency.org_id)
    clients = []
    for name in ("Client One", "Client Two"):
        client_org = await create_organization(connection, name)
        await connection.execute("UPDATE organizations SET agency_id = $2 WHERE id = $1",
                                 client_org.org_id, agency.org_id)
        lead = await insert_lead(connection, client_org.org_id, "+14155550333",
                                 name=f"{name} Lead")
        call = await insert_call(connection, client_org.org_id, lead_id=lead,
                                 customer_number="+14155550333")
        outbound, _ = await _outbound(connection, client_org.org_id)
        clients.append((client_org, {"call_id": call, "lead_id": str(lead),
                                     "token_id": str(client_org.token_id), **outbound}))
    await add_person(connection, agency.org_id, "staff@northwind.example", "admin")
    await add_person(connection, clients[0][0].org_id, "owner@client-one.example", "owner")
    id_routes = [r for r in dashboard_routes(dashboard)
                 if "{" in r[1] and ROUTES[r] != PUBLIC]

    staff, csrf = await signed_in_client(dashboard, "staff@northwind.example")
    async with contextlib.aclosing(staff):
        assert (await staff.get("/clients")).status_code == 200
        for client_org, ids in clients:
            switched = await staff.post("/switch", data={"csrf": csrf,
                                                         "org": str(client_org.org_id)})
            assert switched.status_code == 303
            page = await staff.get(f"/calls/{ids['call_id']}")
            assert page.status_code == 200 and client_org.name in page.text
        # Not into a business that is no client of the agency.
        refused = await staff.post("/switch", data={"csrf": csrf,
                                                    "org": str(dashboard.org.org_id)})
        assert refused.status_code == 404
        assert (await staff.get(f"/calls/{dashboard.call_ids[0]}")).status_code == 404

    own, other_ids = clients[0], clients[1][1]
    client_user, csrf = await signed_in_client(dashboard, "owner@client-one.example")
    async with contextlib.aclosing(client_user):
        for target in (clients[1][0].org_id, agency.org_id, dashboard.org.org_id):
            answer = await client_user.post("/switch", data={"csrf": csrf,
                                                             "org": str(target)})
            assert answer.status_code == 404, target
        assert (await client_user.get("/clients")).status_code == 404
        for method, template in id_routes:
            answer = await _request(client_user, method, _path(template, other_ids),
                                    {"csrf": csrf})
            assert answer.status_code == 404, (method, template)
            assert "Client Two" not in answer.text
    assert await connection.fetchval(
        "SELECT array_agg(DISTINCT s.org_id) FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.email = 'owner@client-one.example'") == [own[0].org_id]
