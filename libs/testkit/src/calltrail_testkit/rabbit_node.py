"""A RabbitMQ node of the fault suite's own, so that it can be stopped and started for real.

The machine's node (`rabbit@localhost`, port 5672) is shared and never touched: this one
has its own node name, AMQP and distribution ports (loopback only), data and log
directories under a temp dir, an empty plugin list, and its own Erlang cookie (a `HOME` of
its own), so `rabbitmqctl` run from here cannot even authenticate to the shared node.
`/etc/rabbitmq/rabbitmq-env.conf` is not read (`RABBITMQ_CONF_ENV_FILE` points to an empty
file): it pins the node name.

Run as root, the node and `rabbitmqctl` run as the `rabbitmq` user (`runuser`), as the
distribution's scripts do; its directories are chowned to it. `stop()` halts the node and
waits for the process to exit; `start()` again reuses the same data directory, so durable
quorum queues keep their messages across a real restart. `destroy()` stops it and removes
the directory; it is registered with `atexit` too, so a failed run leaves nothing behind.

`RabbitCluster` is three (or more) such nodes sharing one Erlang cookie, joined into a
cluster, as a business runs RabbitMQ beyond one machine: quorum queues declared on it have
a member on each node, and any one node can be stopped, or cut off, without losing them.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from calltrail_testkit.processes import HOST, free_port

SBIN = Path("/usr/lib/rabbitmq/bin")  # Debian's real scripts (/usr/sbin wraps them in su)
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30
CTL_TIMEOUT_SECONDS = 20


def _program(name: str) -> str:
    found = SBIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"{name} not found: install rabbitmq-server")
    return on_path


class _StartedInWith:
    """`with X() as x:` starts x, and destroys it on the way out (or if it fails to start)."""

    def start(self) -> float:
        raise NotImplementedError

    def destroy(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


class RabbitNode(_StartedInWith):
    def __init__(self, cookie: str | None = None) -> None:
        self.name = f"calltrail-chaos-{uuid.uuid4().hex[:8]}@localhost"
        self._cookie = cookie or secrets.token_hex(16)  # a cluster's nodes share theirs
        self.port = free_port()
        self.dist_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="calltrail-rabbit-"))
        self._user = "rabbitmq" if os.geteuid() == 0 else None
        self._running = False
        self._prepared = False
        atexit.register(self.destroy)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    def _prepare(self) -> None:
        home = self.base / "home"
        for directory in (home, self.base / "mnesia", self.base / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(self._cookie)
        cookie.chmod(0o400)
        # net_ticktime: a node that stops answering (frozen) is declared down after about
        # 10 s rather than 60, so the quorum queues it leads elect another leader within a
        # fault's phase (deploy/k8s/rabbitmq sets the same).
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = {HOST}:{self.port}\nloopback_users = none\n"
            "net_ticktime = 10\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._prepared = True

    def _env(self) -> list[str]:
        return [f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", "LANG=C.UTF-8",
                f"HOME={self.base / 'home'}",
                f"RABBITMQ_CONF_ENV_FILE={self.base / 'rabbitmq-env.conf'}",
                f"RABBITMQ_CONFIG_FILE={self.base / 'rabbitmq.conf'}",
                f"RABBITMQ_NODENAME={self.name}",
                f"RABBITMQ_DIST_PORT={self.dist_port}",
                f"RABBITMQ_MNESIA_BASE={self.base / 'mnesia'}",
                f"RABBITMQ_LOG_BASE={self.base / 'log'}",
                f"RABBITMQ_PID_FILE={self.base / 'node.pid'}",
                f"RABBITMQ_ENABLED_PLUGINS_FILE={self.base / 'enabled_plugins'}",
                "ERL_EPMD_ADDRESS=127.0.0.1",
                "ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}"]

    def _run(self, program: str, *args: str,
             timeout: float = CTL_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        command = ["env", "-i", *self._env(), _program(program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.base, check=False)

    def _ctl(self, *args: str, timeout: float = CTL_TIMEOUT_SECONDS) -> bool:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._run("rabbitmqctl", "-n", self.name, *args,
                             timeout=timeout).returncode == 0
        return False

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_SECONDS) -> str:
        """`rabbitmqctl -n <this node> args...`; its output, or RuntimeError with why."""
        result = self._run("rabbitmqctl", "-n", self.name, *args, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name} failed: "
                               f"{(result.stderr or result.stdout)[-1000:]}")
        return result.stdout

    @property
    def running(self) -> bool:
        return self._running

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
            return True
        return False

    def start(self) -> float:
        """Start the node (data kept from a previous start); seconds until it takes AMQP."""
        if not self._prepared:
            self._prepare()
        started = time.monotonic()
        result = self._run("rabbitmq-server", "-detached")
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmq-server -detached failed: {result.stderr[-2000:]}")
        self._running = True
        deadline = started + START_TIMEOUT_SECONDS
        # await_startup fails at once until the node has registered with epmd: poll it.
        while not (self._ctl("await_startup", "--timeout", "10", timeout=15)
                   and self._accepts()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.name} did not start in "
                                   f"{START_TIMEOUT_SECONDS} s:\n{self.log_tail()}")
            time.sleep(0.3)
        return time.monotonic() - started

    def stop(self) -> float:
        """Stop the node for real and wait for its process to exit; seconds it took."""
        started = time.monotonic()
        if self._running:
            # Given the pid file, `stop` returns only once the OS process has exited.
            if not self._ctl("stop", str(self.base / "node.pid"),
                             timeout=STOP_TIMEOUT_SECONDS):
                self._kill_by_pid()
            self._running = False
        return time.monotonic() - started

    def _signal(self, signal_number: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.base / "node.pid").read_text().strip()), signal_number)

    def _kill_by_pid(self) -> None:
        self._signal(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP the node: its sockets stay open and nothing answers on them (peers and
        clients alike), as when a host's network goes silent; `thaw` resumes it."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def destroy(self) -> None:
        """Stop the node if it runs and remove everything it had; safe to call twice."""
        self.thaw()  # a frozen node would not hear `stop`
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.destroy)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            log = self.base / "log" / f"{self.name}.log"
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return ""



class RabbitCluster(_StartedInWith):
    """`size` nodes of our own joined into one cluster (the first is the seed)."""

    def __init__(self, size: int = 3) -> None:
        cookie = secrets.token_hex(16)
        self.nodes = [RabbitNode(cookie) for _ in range(size)]

    @property
    def url(self) -> str:
        """`AMQP_URL` naming every node, as a service is configured for a cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> float:
        """Start every node, then join the others to the first; seconds it took."""
        started = time.monotonic()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(), self.nodes))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name, timeout=60)
            node.ctl("start_app", timeout=60)
        running = seed.ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(len(self.nodes)):
            raise RuntimeError(f"{running} of {len(self.nodes)} nodes running in the cluster")
        return time.monotonic() - started

    def node_named(self, name: str) -> RabbitNode:
        return next(node for node in self.nodes if node.name == name)

    def leaders_of(self, queues: list[str]) -> dict[str, RabbitNode]:
        """The node that leads each quorum queue now (asked of a running node, at once)."""
        asking = next(node for node in self.nodes if node.running)
        names = ", ".join(f'<<"{queue}">>' for queue in queues)
        answer = asking.ctl("eval", f"""
            [begin
                {{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, N)),
                {{_, Leader}} = amqqueue:get_pid(Q), Leader
             end || N <- [{names}]].""")
        leaders = re.findall(r"'([^']+)'", answer)
        return {queue: self.node_named(leader) for queue, leader in zip(queues, leaders,
                                                                         strict=True)}

    def busiest_leader(self, queues: list[str]) -> tuple[RabbitNode, int]:
        """The node that leads the most of `queues` now, and how many it leads."""
        led = collections.Counter(node.name for node in self.leaders_of(queues).values())
        name, count = led.most_common(1)[0]
        return self.node_named(name), count

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()

