"""`calltrail vapi ...` and `calltrail keys rotate` run as an operator runs them, beside a
real metrics-sync process; and the API key, once given, appears nowhere but as ciphertext:
not in any output, log line or database dump."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi
from tests.admin.test_cli import calltrail
from tests.conftest import AMQP_URL, free_port
from tests.metrics_sync.conftest import ENCRYPTION_KEY, fetch, new_org

API_KEY = "sk-live-0f9e8d7c-SECRET-6b5a4f3e2d1c"
NEW_ENCRYPTION_KEY = "a-brand-new-encryption-key-for-rotation-0001"


def _sync_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "metrics_sync"], stdout=out, stderr=out,
                                env={**os.environ, **env})


async def test_connect_sync_disconnect_rotate_and_the_key_never_shows(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str],
        tmp_path: Path) -> None:
    fake, url = fake_vapi
    account = fake.add_account(API_KEY, seed=11, calls=40, days=7)
    org_id = str(await new_org(database_url))
    env = {"AMQP_URL": AMQP_URL, "AMQP_PREFIX": topology.prefix,
           "ENCRYPTION_KEY": ENCRYPTION_KEY, "VAPI_API_BASE_URL": url, "LOG_LEVEL": "debug",
           "METRICS_SYNC_METRICS_PORT": "0"}
    outputs: list[str] = []

    def run(*args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
        done = calltrail(*args, database_url=database_url, stdin=stdin, **{**env, **extra})
        outputs.extend([done.stdout, done.stderr])
        return done

    # A key Vapi refuses is never stored; no key on stdin is a clear error.
    refused = run("vapi", "connect", "--org", org_id, stdin="sk-wrong-key\n")
    assert refused.returncode != 0 and "refused" in refused.stderr
    empty = run("vapi", "connect", "--org", org_id, stdin="")
    assert empty.returncode != 0 and "standard input" in empty.stderr

    connected = run("vapi", "connect", "--org", org_id, stdin=API_KEY + "\n")
    assert connected.returncode == 0, connected.stderr
    assert orjson.loads(connected.stdout)["vapiOrgId"] == account.org_id

    log = tmp_path / "metrics-sync.log"
    port = free_port()
    service = _sync_process({**env, "DATABASE_URL": database_url,
                             "METRICS_SYNC_HOST": "127.0.0.1",
                             "METRICS_SYNC_METRICS_PORT": str(port)}, log)
    try:
        synced = run("vapi", "sync", "--org", org_id, "--wait", "--timeout", "60")
        assert synced.returncode == 0, synced.stderr
        assert orjson.loads(synced.stdout)["status"] == "succeeded"

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probes:
            assert (await probes.get("/readyz")).status_code == 200
            metrics = (await probes.get("/metrics")).text
        assert 'calltrail_sync_runs_total{outcome="succeeded"}' in metrics
        assert "calltrail_sync_lag_seconds" in metrics

        account.unauthorized = True  # the key was revoked in Vapi
        failed = run("vapi", "sync", "--org", org_id, "--wait", "--timeout", "60")
        assert failed.returncode != 0 and "invalid_api_key" in failed.stderr
        account.unauthorized = False
    finally:
        service.terminate()
        assert service.wait(30) == 0  # a clean SIGTERM
    outputs.append(log.read_text(errors="replace"))

    # Rotation: re-sealed under the new key, and still readable through a reconnect cycle.
    before = await fetch(database_url, "SELECT sealed FROM vapi_api_keys")
    rotated = run("keys", "rotate", ENCRYPTION_KEY=NEW_ENCRYPTION_KEY,
                  ENCRYPTION_KEY_PREVIOUS=ENCRYPTION_KEY)
    assert rotated.returncode == 0, rotated.stderr
    assert orjson.loads(rotated.stdout)["rotated"] == 1
    after = await fetch(database_url, "SELECT sealed FROM vapi_api_keys")
    assert before[0]["sealed"] != after[0]["sealed"]

    dump = (await asyncio.to_thread(subprocess.run, ["pg_dump", "--data-only", database_url],
                                    capture_output=True, check=True)).stdout
    assert API_KEY.encode() not in dump
    assert API_KEY.encode().hex().encode() not in dump
    for text in outputs:
        assert API_KEY not in text

    disconnected = run("vapi", "disconnect", "--org", org_id)
    assert disconnected.returncode == 0, disconnected.stderr
    assert not await fetch(database_url, "SELECT 1 FROM vapi_api_keys")
    again = run("vapi", "sync", "--org", org_id)
    assert again.returncode != 0 and "no connected Vapi account" in again.stderr


def test_metrics_sync_refuses_to_start_with_a_short_encryption_key() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "metrics_sync"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "ENCRYPTION_KEY": "too-short"}, check=False)
    assert done.returncode != 0
    assert "ENCRYPTION_KEY" in done.stderr and "32" in done.stderr


async def test_sync_wait_without_a_running_service_says_so(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    fake.add_account("key-idle", seed=12, calls=1, days=1)
    org_id = str(await new_org(database_url))
    env = {"AMQP_URL": AMQP_URL, "AMQP_PREFIX": topology.prefix,
           "ENCRYPTION_KEY": ENCRYPTION_KEY, "VAPI_API_BASE_URL": url}
    assert calltrail("vapi", "connect", "--org", org_id, stdin="key-idle",
                     database_url=database_url, **env).returncode == 0
    waited = await asyncio.to_thread(calltrail, "vapi", "sync", "--org", org_id, "--wait",
                                     "--timeout", "1", database_url=database_url, **env)
    assert waited.returncode != 0 and "calltrail-metrics-sync" in waited.stderr
