"""A test's timeout fails the run; nothing can swallow it (issue 16).

pytest-timeout's signal method (`timeout = 120` in pyproject.toml) raises pytest's `Failed`
inside the test, once. Two things take that exception for something else and run on:
Hypothesis, which treats it as a failing example and goes on shrinking (re-running the
looping test, with no second alarm), and asyncio, when the alarm lands while another task
runs (the task stores it as its own exception and dies; the test goes on). Either way CI hung
instead of going red, as a pagination test did while its cursor never moved on.

So each test also gets a watchdog: still running `BACKSTOP_SECONDS` after its timeout, the
process prints every thread's stack and exits with status 1 (under xdist that process is a
worker: xdist reports the test as failed, "worker crashed", and the run goes on). The
signal method stays first, because a timeout it reports fails one test and the rest of the
run goes on; the thread method alone would end the whole run at the first timeout.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import pytest_timeout

BACKSTOP_SECONDS = 30.0
_WATCHDOG = pytest.StashKey[threading.Timer]()


def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the watchdog; return None, so that pytest-timeout arms its own timer too."""
    if not settings.timeout or settings.timeout <= 0:
        return
    watchdog = threading.Timer(settings.timeout + BACKSTOP_SECONDS, swallowed_timeout,
                               (item, settings))
    watchdog.name = f"timeout backstop {item.nodeid}"
    watchdog.daemon = True
    item.stash[_WATCHDOG] = watchdog
    watchdog.start()


def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    watchdog = item.stash.get(_WATCHDOG, None)
    if watchdog is not None:
        watchdog.cancel()


def swallowed_timeout(item: pytest.Item, settings: Any) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(item)
    item.config.get_terminal_writer().line(
        f"\n{item.nodeid} is still running {BACKSTOP_SECONDS:.0f} s after its "
        f"{settings.timeout:g} s timeout: the timeout was swallowed (by Hypothesis or an "
        "asyncio task). The run ends here, with status 1.", red=True, bold=True)
    # pytest-timeout's thread method: the captured output and every thread's stack, then
    # os._exit(1).
    pytest_timeout.timeout_timer(item, settings)
