"""The dashboard's pages, by page group: signing in and out, the overview and usage figures,
calls, leads, settings (the Vapi account, "Sync now", the webhook address), and API tokens
with the audit log. What every page does is `api.dashboard.page`."""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard.routes import (
    agencies,
    calls,
    figures,
    leads,
    links,
    settings,
    sign_in,
    tokens,
    webhook,
)

router = APIRouter(include_in_schema=False)
for group in (sign_in, links, figures, calls, leads, settings, webhook, tokens, agencies):
    router.include_router(group.router)
