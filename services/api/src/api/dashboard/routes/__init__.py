"""The dashboard's pages, by page group: signing in and out, password resets, invitations,
the overview and usage figures, calls, leads, settings (the Vapi account, "Sync now", the
webhook address) and the organization's people. What every page does is
`api.dashboard.page`."""

from __future__ import annotations

from fastapi import APIRouter

from api.dashboard.routes import (
    calls,
    figures,
    leads,
    links,
    people,
    reset,
    settings,
    sign_in,
)

router = APIRouter(include_in_schema=False)
for group in (sign_in, reset, links, figures, calls, leads, settings, people):
    router.include_router(group.router)
