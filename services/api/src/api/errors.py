"""Every way the api refuses a request, translated to an answer once, in `app.py`:
`{"error": code, "message": text}` with the status below. Messages never carry a token, an
API key or a request body.

    ApiError
    ├── InvalidParameter   400 invalid_parameter: names the parameter and what is wrong
    ├── InvalidApiKey      400 invalid_api_key: Vapi answered 401 to the key check
    ├── Unauthorized       401 unauthorized: no token, a wrong one or a revoked one
    ├── NotFound           404 not_found: no such id in the token's organization (another
    │                      organization's id and a malformed id answer the same)
    ├── NoRecording        404 no_recording: the call is there, its recording is not
    ├── NotConnected       409 not_connected: the organization has no connected Vapi account
    ├── TooManyEndpoints   409 too_many_endpoints: the organization has as many outbound
    │                      webhook endpoints as it may
    ├── EndpointDisabled   409 endpoint_disabled: send again to a disabled endpoint
    ├── DeliveryPending    409 delivery_pending: send again while it is being sent
    └── VapiUnavailable    502 vapi_unavailable: Vapi could not be reached or answered badly
"""

from __future__ import annotations


class ApiError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(ApiError):
    status_code = 400
    code = "invalid_parameter"

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


class InvalidApiKey(ApiError):
    status_code = 400
    code = "invalid_api_key"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class NoRecording(ApiError):
    status_code = 404
    code = "no_recording"


class NotConnected(ApiError):
    status_code = 409
    code = "not_connected"


class TooManyEndpoints(ApiError):
    status_code = 409
    code = "too_many_endpoints"


class EndpointDisabled(ApiError):
    status_code = 409
    code = "endpoint_disabled"


class DeliveryPending(ApiError):
    status_code = 409
    code = "delivery_pending"


class VapiUnavailable(ApiError):
    status_code = 502
    code = "vapi_unavailable"


class NoWebhookEndpoint(ApiError):
    status_code = 409
    code = "no_webhook_endpoint"
