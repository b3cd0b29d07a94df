"""Process-level behaviour shared by every Calltrail service."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def exit_zero_after_graceful_sigterm() -> None:
    """Make a SIGTERM that the server already handled gracefully end with status 0.

    uvicorn drains in-flight requests on SIGTERM, restores the previous handler and
    re-raises the signal; with this handler in place that ends as a clean exit, not -15.
    """
    signal.signal(signal.SIGTERM, _exit_cleanly)
