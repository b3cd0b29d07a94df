"""Ingest's `/openapi.json`: a valid OpenAPI document, built from the route table the app
serves, so a route cannot be added without appearing in it (or documented without being
served)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from schemathesis.specs.openapi.adapter.validators import validate_v3

from calltrail_common.topology import Topology
from ingest.app import operations
from tests.conftest import make_settings, serve_ingest


async def test_the_document_lists_every_route_the_app_serves(
        topology: Topology, spool_dir: Path, database_url: str) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             database_url=database_url)
    async with serve_ingest(settings) as ingest:
        response = await ingest.client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        document = response.json()
        validate_v3(document)  # against the OpenAPI 3.1 meta-schema
        schema = schemathesis.openapi.from_dict(document)
        documented = {(op.path, op.method.lower()) for op in
                      (result.ok() for result in schema.get_all_operations())}
        assert documented == {(op.path, op.method) for op in operations()}

        for path, method in documented:
            concrete = path.replace("{endpoint_id}", "ep_unknown")
            answer = await ingest.client.request(method, concrete, content=b"{}")
            # Every documented route is served: at worst it refuses the request itself.
            assert answer.status_code in (200, 401, 404, 503), (method, path, answer.text)
            if answer.status_code == 404:
                assert answer.json() == {"error": "unknown_endpoint"}, (method, path)
        assert (await ingest.client.get("/nowhere")).status_code == 404
        assert (await ingest.client.post("/webhooks/vapi/a/b")).status_code == 404

        security = document["components"]["securitySchemes"]
        assert {s.get("name") for s in security.values()} >= {"X-Vapi-Secret",
                                                              "X-Vapi-Signature"}
        shared = document["paths"]["/webhooks/vapi"]["post"]
        assert set(shared["responses"]) == {"200", "400", "401", "413", "415", "503"}
        per_org = document["paths"]["/webhooks/vapi/{endpoint_id}"]["post"]
        assert set(per_org["responses"]) == {"200", "400", "401", "404", "413", "415", "503"}
