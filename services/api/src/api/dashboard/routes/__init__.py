"""The dashboard's pages, by page group: signing in and out, password resets, invitations,
the overview and usage figures, calls, leads, settings (the Vapi account, "Sync now", the
webhook and its secret, the organization's people, API tokens, the audit log, outbound
webhooks, what counts as a call's success and the Vapi account's wiring), and an agency's
clients. What every page does is `api.dashboard.page`."""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard.routes import (
    agencies,
    calls,
    figures,
    leads,
    links,
    live,
    outbound_webhooks,
    people,
    reset,
    settings,
    sign_in,
    success,
    tokens,
    vapi_wiring,
    webhook,
)

router = APIRouter(include_in_schema=False)
for group in (sign_in, reset, links, figures, calls, leads, settings, webhook, people, tokens,
              outbound_webhooks, agencies, success, vapi_wiring, live):
    router.include_router(group.router)
