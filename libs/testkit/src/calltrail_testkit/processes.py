"""Processes on this machine: a service started with its log, free loopback ports, and what
a process and the machine have spent (CPU, peak memory), for benchmarks and the fault suite.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

HOST = "127.0.0.1"
WEBHOOK_PATH = "/webhooks/vapi"
STOP_TIMEOUT_SECONDS = 10


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A process of ours (a service, a fake, a proxy) with its own log file; not started."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"

    def start(self) -> None:
        # Appended: a server restarted by the fault suite keeps the log of its earlier life.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd,
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_summary(self) -> dict[str, int]:
        """Log lines by level and event (structured lines) or by first words (others)."""
        counts: collections.Counter[str] = collections.Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    counts[f"{record.get('level')} {record.get('event')}"] += 1
                except (ValueError, AttributeError):
                    counts[" ".join(line.split()[:3])[:80]] += 1
        return dict(counts.most_common(20))


def base_env(home: Path) -> dict[str, str]:
    """What every process of ours inherits: PATH, a UTF-8 locale and a home; nothing else,
    so that no setting of the caller's leaks into a measurement."""
    return {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", str(home))}


def serve_app(app: Starlette, port: int) -> None:
    """Serve `app` as the services serve theirs: one uvicorn worker on loopback, uvloop and
    httptools, no access log (the comparison servers run this way: `python -m ...`)."""
    uvicorn.run(app, host=HOST, port=port, loop="uvloop", http="httptools", lifespan="on",
                access_log=False, log_level="warning", server_header=False, workers=1)


# --- what a process and the machine spent -----------------------------------------------


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    return None


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
