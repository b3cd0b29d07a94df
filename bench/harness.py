"""What every benchmark shares: `wrk` (installed when missing, run, its output parsed), where
results go (`bench/results/<name>-<UTC timestamp>.json`) and the machine they were measured
on. The services, the fake Vapi and the traffic come from `calltrail_testkit`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calltrail_testkit import processes

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

WRK_THREADS = 2
WRK_TIMEOUT = "5s"  # per request; ingest's confirm timeout is 3 s
WRK_GRACE_SECONDS = 30  # how much longer than its duration wrk may take before it is killed
APT_TIMEOUT_SECONDS = 300


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    non_2xx_3xx: int

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors (connect, read, write, timeout)."""
        refused = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return max(refused, self.non_2xx_3xx) + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "seconds": self.seconds,
            "requests_per_s": self.requests_per_s, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "ok": self.ok, "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors, "non_2xx_3xx": self.non_2xx_3xx,
        }


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk printed no {percentile}% latency:\n{output}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse `wrk --latency` output plus the BENCH_STATUS line of the Lua scripts."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    status_line = re.search(r"^BENCH_STATUS(.*)$", output, re.MULTILINE)
    if total is None or rate is None or status_line is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    statuses = {int(code): int(count)
                for code, count in re.findall(r"(\d+)=(\d+)", status_line.group(1))}
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if errors is not None:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _TIME_UNITS_MS[total.group(3)] / 1000,
        requests_per_s=float(rate.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        statuses=statuses,
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def ensure_wrk() -> str:
    """The path of `wrk`, installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench: `wrk` is not on PATH. Install it (Debian/Ubuntu: "
                         "`sudo apt-get install -y wrk`) or run the benchmark as root.")
    print("wrk is not on PATH: installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    for commands in ([install], [["apt-get", "update"], install]):
        try:
            for command in commands:
                subprocess.run(command, env=env, check=True, timeout=APT_TIMEOUT_SECONDS,
                               stdout=subprocess.DEVNULL)
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            continue
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: could not install `wrk` with apt-get; install it and run "
                         "the benchmark again.")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version and exits non-zero.
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10,
                          check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


async def run_wrk(wrk: str, url: str, script: Path, *, seconds: int, connections: int,
                  script_args: Sequence[str] = (), env: dict[str, str] | None = None
                  ) -> WrkResult:
    """`wrk --latency` with the Lua `script` (and its arguments) against `url`."""
    process = await asyncio.create_subprocess_exec(
        wrk, f"-t{min(WRK_THREADS, connections)}", f"-c{connections}", f"-d{seconds}s",
        "--latency", "--timeout", WRK_TIMEOUT, "-s", str(script), url,
        *(("--", *script_args) if script_args else ()),
        env=None if env is None else {**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(),
                                                seconds + WRK_GRACE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"wrk did not finish within {seconds + WRK_GRACE_SECONDS} s") \
            from None
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.decode()}")
    return parse_wrk(stdout.decode())


def machine_info(wrk: str | None = None) -> dict[str, Any]:
    """The machine a result was measured on (and wrk's version, when it drove the load)."""
    return {**processes.machine_info(), **({"wrk": wrk_version(wrk)} if wrk else {})}


def write_results(name: str, results: dict[str, Any]) -> Path:
    """`results` as `bench/results/<name>-<UTC timestamp>.json`; the path, also printed."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    return path
