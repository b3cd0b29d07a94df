"""`calltrail-ingest`: the one place that starts the ingest service."""

from __future__ import annotations

import sys

import uvicorn

from calltrail_common.logging import configure_logging
from calltrail_common.process import exit_zero_after_graceful_sigterm
from calltrail_common.settings import SettingsError, load_settings
from ingest.app import create_app


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as error:
        sys.exit(f"calltrail-ingest: {error}")
    configure_logging(settings)
    exit_zero_after_graceful_sigterm()
    uvicorn.run(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # ingest logs one line per refused request itself, never bodies
        log_level="warning",
        server_header=False,
        proxy_headers=False,  # ingest never uses the client's address
    )


if __name__ == "__main__":
    main()
