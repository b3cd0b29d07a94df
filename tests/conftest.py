"""Real PostgreSQL and RabbitMQ for every test, each test on its own names.

- PostgreSQL: one template database per run, migrated once; each test that asks for a
  database gets `CREATE DATABASE ... TEMPLATE` of it (real and fast), dropped afterwards.
- RabbitMQ: each test gets its own `AMQP_PREFIX`; its exchanges and queues are deleted after.
- Ingest runs in-process on a real socket (uvicorn) or as a real subprocess when a test must
  kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
import uvicorn

from calltrail_common import db
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology, delete_topology
from calltrail_testkit.tcp_proxy import TcpProxy
from ingest.app import create_app

pytest_plugins = ["tests.timeout_backstop"]  # a swallowed timeout ends the run: issue 16

# `make test` runs the suite on 4 xdist workers (`-n 4 --dist loadgroup`): most tests wait on
# sockets and timers, not on the 2 cores. Tests in a group run on one worker, in order, and
# the groups go first (the longest work starts first): the fault tests (10-110 s each, each
# driving its own services at 50 webhooks/s, so never all at once) in two groups of about 3
# minutes; the tests that load Vapi's SDK in one (its import alone is ~20 s of CPU, paid once
# per worker that needs it). Without xdist the marks do nothing.
_FAULTS_FIRST_GROUP = ("cluster", "sync-broker-cut", "sync-vapi-hang")
_VAPI_SDK_FILES = ("tests/test_fixtures.py", "tests/test_fake_vapi.py",
                   "tests/call_processor/test_snapshots.py")


def _group(item: pytest.Item) -> str | None:
    path = item.nodeid.split("::", 1)[0]
    if path == "tests/test_chaos.py":
        first = any(name in item.nodeid for name in _FAULTS_FIRST_GROUP)
        return "faults-1" if first else "faults-2"
    return "vapi-sdk" if path in _VAPI_SDK_FILES else None


# tryfirst: xdist's worker adds the `@group` suffix loadgroup schedules by in its own
# collection hook, which otherwise runs before this one and sees no mark.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    grouped: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        group = _group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        (grouped if group is not None else rest).append(item)
    items[:] = [*sorted(grouped, key=lambda item: _group(item) or ""), *rest]


def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker with `--dist loadgroup`, every grouped test must carry the
    `@group` suffix the scheduler reads: without it the groups are silently ignored (pytest
    9.2 with xdist 3.8 did that, pytest-xdist#1386), and the suite runs minutes longer."""
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist workers only
        return
    lost = [item.nodeid for item in session.items
            if _group(item) is not None and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"xdist loadgroup lost its groups (e.g. {lost[0]}): "
                                "pytest and pytest-xdist disagree; see pyproject.toml")


POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REPO = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "test-shared-secret-" + uuid.uuid4().hex[:8]


def _run(coro):  # a sync fixture driving one coroutine
    return asyncio.run(coro)


async def _admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(f"{POSTGRES_ADMIN_URL}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    name = f"calltrail_test_tmpl_{uuid.uuid4().hex[:8]}"
    _run(_admin_execute(f'CREATE DATABASE "{name}"'))
    _run(db.migrate(f"{POSTGRES_ADMIN_URL}/{name}"))
    yield name
    _run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    name = f"calltrail_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield f"{POSTGRES_ADMIN_URL}/{name}"
    await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _delete_topology(topology: Topology) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await delete_topology(await connection.channel(), topology)
    finally:
        await connection.close()


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    topology = Topology(f"test-{uuid.uuid4().hex[:10]}")
    yield topology
    await _delete_topology(topology)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "amqp_url": AMQP_URL,
        "vapi_webhook_secret": WEBHOOK_SECRET,
        "ingest_confirm_timeout_seconds": 1.0,
        "ingest_endpoint_refresh_seconds": 0.5,
        "log_level": "debug",
        "api_metrics_port": 0,  # a test that wants it asks for a free port
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class RunningIngest:
    url: str
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, name: str) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in this event loop; its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # asyncio sets TCP_NODELAY only on sockets whose protocol is TCP (this one's is 0):
    # without it every answer waits ~40 ms on Nagle and delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, f"{name} did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def serve_ingest(settings: Settings) -> AsyncIterator[RunningIngest]:
    """Run the real ingest app with uvicorn on a free loopback port in this event loop."""
    async with serve_asgi(create_app(settings), "ingest") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield RunningIngest(url, client)


async def wait_for_broker(client: httpx.AsyncClient, timeout: float = 15.0) -> None:
    """Until ingest's broker connection is up (its metrics say so)."""
    deadline = time.monotonic() + timeout
    while "calltrail_ingest_broker_connected 1.0" not in (await client.get("/metrics")).text:
        assert time.monotonic() < deadline, "ingest never connected to the broker"
        await asyncio.sleep(0.05)


@pytest.fixture
async def broker_proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    yield proxy
    await proxy.close()


def proxied_amqp_url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IngestProcess:
    """`calltrail-ingest` as a real process, as an operator runs it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env, "INGEST_HOST": "127.0.0.1",
                     "INGEST_PORT": str(self.port)}
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self._log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"], env=self._env, stdout=log, stderr=log,
                cwd=self._log_path.parent)
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.logs()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError("ingest process did not become healthy:\n" + self.logs())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def logs(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def ingest_process_factory(tmp_path: Path) -> Iterator:
    started: list[IngestProcess] = []

    def factory(**env: str) -> IngestProcess:
        base = {
            "AMQP_URL": AMQP_URL,
            "VAPI_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",
            "INGEST_CONFIRM_TIMEOUT_SECONDS": "1",
        }
        process = IngestProcess({**base, **env}, tmp_path / f"ingest-{len(started)}.log")
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is New York's: what reads an instant or a day must not
    depend on it."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
