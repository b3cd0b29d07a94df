"""Every way ingest refuses a webhook, translated to an HTTP answer once, in `app.py`.

    IngestError
    ├── Unauthorized          401 {"error": "unauthorized"} (never says which part failed)
    ├── UnknownEndpoint       404 {"error": "unknown_endpoint"}
    ├── PayloadTooLarge       413 {"error": "payload_too_large"}
    ├── UnsupportedMediaType  415 {"error": "unsupported_media_type"}
    ├── InvalidPayload        400 {"error": "invalid_payload", "detail": ...}
    └── Unavailable           503 {"error": "unavailable"}: neither the broker nor the
                              spool could make the event durable (or, for a per-organization
                              endpoint, its secrets were never loaded)
"""

from __future__ import annotations


class IngestError(Exception):
    status_code = 500
    code = "internal_error"


class Unauthorized(IngestError):
    status_code = 401
    code = "unauthorized"


class UnknownEndpoint(IngestError):
    status_code = 404
    code = "unknown_endpoint"


class PayloadTooLarge(IngestError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(IngestError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidPayload(IngestError):
    status_code = 400
    code = "invalid_payload"


class Unavailable(IngestError):
    status_code = 503
    code = "unavailable"
