"""The one typed settings model every Calltrail process reads (contract section 2).

Every variable is documented in `.env.example` at the repo root. Each process builds
`Settings()` once in its entry point and passes it down; nothing reads the environment
anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Checked where keys are used: calltrail_common.crypto.KeyRing.from_settings.
MIN_ENCRYPTION_KEY_LENGTH = 32


class SettingsError(Exception):
    """A setting a process needs is missing or invalid; the message says which and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Connections.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/calltrail"
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Prefix of every exchange and queue name, so tests and benchmarks never touch a
    # running stack on the same broker.
    amqp_prefix: str = "calltrail"
    # AMQP heartbeat asked for by every service: a half-open broker connection is found
    # within about 3x this (the client) or 2x (the broker), then reconnected.
    amqp_heartbeat_seconds: int = Field(default=3, ge=1, le=60)
    # Longest a single Postgres statement may take before it counts as a lost connection
    # (a half-open connection would otherwise hang a consumer for ever).
    database_command_timeout_seconds: float = Field(default=30.0, gt=0)

    # Secrets.
    encryption_key: SecretStr | None = None
    encryption_key_previous: SecretStr | None = None
    vapi_webhook_secret: Annotated[tuple[SecretStr, ...], NoDecode] = ()

    # Vapi.
    vapi_api_base_url: str = "https://api.vapi.ai"

    # Ingest.
    ingest_host: str = "0.0.0.0"  # noqa: S104 - a server listens on every interface by default
    ingest_port: int = 8000
    ingest_max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    spool_dir: Path = Path("./var/spool")
    # How long ingest waits for the broker's confirm before it spools the event instead.
    ingest_confirm_timeout_seconds: float = Field(default=3.0, gt=0)
    # How often ingest reloads per-organization endpoint secrets from Postgres.
    ingest_endpoint_refresh_seconds: float = Field(default=10.0, gt=0)
    # An HMAC credential must carry X-Timestamp (signed as `{timestamp}.{body}`, within five
    # minutes): without one a captured request could be replayed for ever. Vapi's HMAC
    # credential sends it; false accepts an HMAC over the body alone.
    ingest_hmac_require_timestamp: bool = True

    # Api.
    api_host: str = "0.0.0.0"  # noqa: S104
    api_port: int = 8001
    # The api's /metrics, on a port of its own that no Ingress or published port reaches
    # (port 0: none); /metrics on API_PORT answers 404 (decision 37).
    api_metrics_port: int = Field(default=9103, ge=0)
    # The largest request body the JSON API reads: a larger Content-Length is refused (413)
    # before anything is read, a chunked body is cut when it passes it.
    api_max_body_bytes: int = Field(default=65536, ge=1024)
    public_base_url: str = "http://localhost:8000"
    # The dashboard's own address, for the links in invitations and password resets.
    dashboard_base_url: str = "http://localhost:8001"
    # Behind a proxy that terminates TLS: mark cookies Secure (with the __Host- prefix) and
    # send HSTS whatever the request's scheme says (X-Forwarded-Proto can be spoofed).
    dashboard_force_https: bool = False
    # A dashboard session ends after this long unused, and in any case this long after
    # sign-in.
    dashboard_session_idle_minutes: int = Field(default=480, ge=1)
    dashboard_session_max_hours: int = Field(default=72, ge=1)
    # Failed sign-ins allowed per account (email) and per client address within the window;
    # past either, sign-in answers 429 without checking the password.
    sign_in_account_failures: int = Field(default=5, ge=1)
    sign_in_address_failures: int = Field(default=20, ge=1)
    sign_in_failure_window_minutes: int = Field(default=15, ge=1)
    # The live board (/live, decision 46): an ended call stays on it this long, with how
    # it ended, then leaves.
    live_linger_seconds: float = Field(default=60.0, gt=0, le=3600)

    # Mail: invitations and password resets. Empty: no mail (the inviter is shown the link,
    # the CLI prints it). smtp://user:pass@host:587 (STARTTLS when offered; credentials are
    # never sent without TLS) or smtps://user:pass@host:465 (implicit TLS).
    smtp_url: SecretStr = SecretStr("")
    smtp_from: str = "Calltrail <calltrail@localhost>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)

    # Metrics-sync.
    sync_interval_seconds: int = Field(default=300, gt=0)
    # Accounts one replica syncs at once (a slow account holds one slot, never the others).
    sync_concurrency: int = Field(default=128, gt=0, le=1000)
    # How far back the first sync of an account reads its call list.
    sync_backfill_days: int = Field(default=90, gt=0)
    # Later syncs ask for calls updated since the last one, minus this (clock skew).
    sync_overlap_seconds: int = Field(default=300, ge=0)
    # A replica holds an account for this long and renews while it syncs; a killed
    # replica's accounts are taken over once it runs out.
    sync_lease_seconds: int = Field(default=60, ge=5)
    # A run that takes longer is abandoned (failed, retried with back-off).
    sync_run_timeout_seconds: float = Field(default=300.0, gt=0)
    # Timeout of one request to the Vapi API.
    vapi_request_timeout_seconds: float = Field(default=20.0, gt=0)
    # Finished sync runs are kept this long.
    sync_run_retention_days: int = Field(default=14, gt=0)
    # metrics-sync's /healthz, /readyz and /metrics (port 0: none).
    metrics_sync_host: str = "0.0.0.0"  # noqa: S104
    metrics_sync_metrics_port: int = Field(default=9102, ge=0)

    # Call processor.
    event_retention_days: int = Field(default=30, gt=0)
    # Events applied per transaction, and how long a batch waits to fill up.
    processor_batch_size: int = Field(default=200, gt=0, le=5000)
    processor_batch_wait_ms: int = Field(default=20, ge=0)
    # Batches one processor applies at once, each on its own connection (their round trips
    # to Postgres overlap); never two of one partition.
    processor_batches_in_flight: int = Field(default=4, ge=1, le=64)
    # How often a processor renews its membership, and how long a replica that stopped
    # renewing (killed) keeps its partitions before the others take them over.
    processor_member_heartbeat_seconds: float = Field(default=1.0, gt=0)
    processor_member_ttl_seconds: float = Field(default=5.0, gt=0)
    # The processor's /healthz, /readyz and /metrics (port 0: none). Replicas on one host:
    # one gets the port.
    processor_host: str = "0.0.0.0"  # noqa: S104
    processor_metrics_port: int = Field(default=9101, ge=0)
    # On SIGTERM, how long the processor waits for the batches in hand to commit and be
    # acknowledged; past it they are handed back unacknowledged (redelivered, idempotent).
    processor_shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    # Outbound webhooks' dispatcher (decision 40). Targets resolving to loopback, private,
    # link-local or other non-public addresses are refused unless this is true (tests, a
    # receiver on the operator's own network).
    webhooks_allow_private_targets: bool = False
    # One attempt's whole time (connect, send, answer); a response is read up to this many
    # bytes and no further.
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0)
    webhooks_max_response_bytes: int = Field(default=65536, ge=0)
    # Requests in flight per replica: in all, and to one endpoint (a hanging receiver holds
    # at most its own share).
    webhooks_concurrency: int = Field(default=256, ge=1, le=4096)
    webhooks_endpoint_concurrency: int = Field(default=64, ge=1, le=4096)
    # An endpoint with no success for this long is disabled (a notice on settings).
    webhooks_disable_after_hours: float = Field(default=72.0, gt=0)
    # How often a dispatcher looks for deliveries to publish when it found none last time.
    webhooks_relay_idle_ms: int = Field(default=200, ge=10)
    # Milliseconds between a failed attempt and the next, comma-separated; after the last,
    # the dead-letter queue. Empty: the topology's (5 s doubling-ish to 10 h, about a day).
    # Tests shorten them; each delay has a queue of its own, so the usual ones stay.
    webhooks_retry_delays_ms: Annotated[tuple[int, ...], NoDecode] = ()
    # The dispatcher's /healthz, /readyz and /metrics (port 0: none).
    dispatcher_host: str = "0.0.0.0"  # noqa: S104
    dispatcher_metrics_port: int = Field(default=9104, ge=0)

    # Logging.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("vapi_webhook_secret", mode="before")
    @classmethod
    def _split_secret_list(cls, value: object) -> object:
        # A comma-separated list, so a secret can be rotated without downtime.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("webhooks_retry_delays_ms", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("webhooks_retry_delays_ms")
    @classmethod
    def _positive_delays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every delay must be a positive number of milliseconds")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(("smtp://", "smtps://")):
            raise ValueError("must start with smtp:// or smtps:// (or be empty: no mail)")
        return value

    @field_validator("public_base_url", "vapi_api_base_url", "dashboard_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _ttl_outlasts_heartbeats(self) -> Settings:
        if self.processor_member_ttl_seconds < 2 * self.processor_member_heartbeat_seconds:
            raise ValueError("PROCESSOR_MEMBER_TTL_SECONDS must be at least twice "
                             "PROCESSOR_MEMBER_HEARTBEAT_SECONDS (a late renewal is not a "
                             "dead replica)")
        return self

    def webhook_secrets(self) -> tuple[bytes, ...]:
        return tuple(s.get_secret_value().encode() for s in self.vapi_webhook_secret)


def load_settings() -> Settings:
    """Read the environment (and `.env`); turn validation errors into one clear message."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
