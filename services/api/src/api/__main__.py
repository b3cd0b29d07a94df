"""`calltrail-api`: the one place that starts the api service."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn

from api.app import create_app
from api.live import end_all_streams
from calltrail_common.crypto import KeyRing
from calltrail_common.logging import configure_logging
from calltrail_common.process import exit_zero_after_graceful_sigterm
from calltrail_common.settings import SettingsError, load_settings


class _Server(uvicorn.Server):
    """uvicorn's server, which on SIGTERM also ends the live boards' streams: it drains
    in-flight requests before the app's shutdown, and a stream never ends by itself."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        end_all_streams()
        super().handle_exit(sig, frame)


def main() -> None:
    try:
        settings = load_settings()
        keyring = KeyRing.from_settings(settings)  # a missing or short key stops start-up here
    except SettingsError as error:
        sys.exit(f"calltrail-api: {error}")
    configure_logging(settings)
    exit_zero_after_graceful_sigterm()
    config = uvicorn.Config(
        create_app(settings, keyring),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # the access log would carry query strings; metrics count requests
        log_level="warning",
        server_header=False,
    )
    server = _Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: it could not start (the port is taken, ...)


if __name__ == "__main__":
    main()
