"""`calltrail-api`: the one place that starts the api service."""

from __future__ import annotations

import sys

import uvicorn

from api.app import create_app
from calltrail_common.crypto import KeyRing
from calltrail_common.logging import configure_logging
from calltrail_common.process import exit_zero_after_graceful_sigterm
from calltrail_common.settings import SettingsError, load_settings


def main() -> None:
    try:
        settings = load_settings()
        keyring = KeyRing.from_settings(settings)  # a missing or short key stops start-up here
    except SettingsError as error:
        sys.exit(f"calltrail-api: {error}")
    configure_logging(settings)
    exit_zero_after_graceful_sigterm()
    uvicorn.run(
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


if __name__ == "__main__":
    main()
