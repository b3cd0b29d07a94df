"""`calltrail org create --agency | --client-of`, `org markup`, `org brand`, `org clients`."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import orjson

from calltrail_common import audit, db
from tests.admin.test_cli import calltrail


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def _fails(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0
    stderr = result.stderr
    assert stderr.count("\n") == 1 and stderr.startswith("calltrail: "), stderr
    assert words in stderr, stderr


async def test_an_agency_onboards_two_clients(database_url: str) -> None:
    agency = _json(calltrail("org", "create", "--name", "Acme Agency", "--agency",
                             database_url=database_url))
    assert isinstance(agency, dict) and agency["kind"] == "agency"
    dental = _json(calltrail("org", "create", "--name", "Bright Dental", "--client-of",
                             agency["orgId"], database_url=database_url))
    plumbing = _json(calltrail("org", "create", "--name", "Harbor Plumbing", "--client-of",
                               agency["orgId"], database_url=database_url))
    assert isinstance(dental, dict) and isinstance(plumbing, dict)
    assert dental["agencyId"] == agency["orgId"] and "apiToken" in dental
    assert _json(calltrail("org", "markup", "--org", dental["orgId"], "--percent", "25",
                           database_url=database_url)) == {
        "orgId": dental["orgId"], "markupPercent": "25.000"}
    branded = _json(calltrail("org", "brand", "--org", agency["orgId"], "--logo-url",
                              "https://cdn.acme.example/logo.png", "--accent", "#AA3366",
                              "--host-name", "Calls.Acme.example", database_url=database_url))
    assert branded == {"orgId": agency["orgId"], "name": "Acme Agency",
                       "logoUrl": "https://cdn.acme.example/logo.png", "accent": "#aa3366",
                       "hostName": "calls.acme.example"}
    assert _json(calltrail("org", "clients", "--org", agency["orgId"],
                           database_url=database_url)) == [
        {"orgId": dental["orgId"], "name": "Bright Dental", "markupPercent": "25.000"},
        {"orgId": plumbing["orgId"], "name": "Harbor Plumbing", "markupPercent": "0.000"}]
    connection = await db.connect(database_url)
    try:
        entries = await audit.entries(connection, uuid.UUID(agency["orgId"]))
        actions = [e.action for e in entries]
        assert sorted(actions) == sorted(["org.created", "token.created", "client.added",
                                          "client.added", "client.markup_set",
                                          "agency.brand_set"])
        assert [(e.actor, e.action) for e in await audit.entries(
            connection, uuid.UUID(dental["orgId"]))
            if e.action != "token.created"] == [("cli", "client.markup_set"),
                                                ("cli", "org.created")]
    finally:
        await connection.close()


def test_clear_one_line_errors(database_url: str) -> None:
    business = _json(calltrail("org", "create", "--name", "Solo", database_url=database_url))
    agency = _json(calltrail("org", "create", "--name", "Acme Agency", "--agency",
                             database_url=database_url))
    assert isinstance(business, dict) and isinstance(agency, dict)
    client = _json(calltrail("org", "create", "--name", "C", "--client-of", agency["orgId"],
                             database_url=database_url))
    assert isinstance(client, dict)
    url = database_url
    _fails(calltrail("org", "create", "--name", "X", "--client-of", business["orgId"],
                     database_url=url), "is not an agency")
    _fails(calltrail("org", "create", "--name", "X", "--client-of", client["orgId"],
                     database_url=url), "is not an agency")
    _fails(calltrail("org", "create", "--name", "X", "--client-of", "nope",
                     database_url=url), "--client-of is not a valid id")
    _fails(calltrail("org", "markup", "--org", business["orgId"], "--percent", "10",
                     database_url=url), "is not a client")
    _fails(calltrail("org", "markup", "--org", client["orgId"], "--percent", "-5",
                     database_url=url), "between 0 and 1000")
    _fails(calltrail("org", "brand", "--org", agency["orgId"], "--logo-url",
                     "http://cdn.example/logo.png", database_url=url), "https://")
    _fails(calltrail("org", "brand", "--org", agency["orgId"], "--accent", "red",
                     database_url=url), "#rrggbb")
    _fails(calltrail("org", "brand", "--org", client["orgId"], "--accent", "#123456",
                     database_url=url), "is not an agency")
    _fails(calltrail("org", "clients", "--org", business["orgId"], database_url=url),
           "is not an agency")
    other = _json(calltrail("org", "create", "--name", "Other Agency", "--agency",
                            database_url=url))
    assert isinstance(other, dict)
    assert calltrail("org", "brand", "--org", agency["orgId"], "--host-name",
                     "calls.acme.example", database_url=url).returncode == 0
    _fails(calltrail("org", "brand", "--org", other["orgId"], "--host-name",
                     "calls.acme.example", database_url=url), "another agency's")
