"""The organization's time zone through the JSON API (decision 45): shown and set, refused
when unknown, and the overview counts its local days, saying `rebuilding` (with the zone its
days are still counted in) until the processors' rebuild is done."""

from __future__ import annotations

import datetime as dt

from call_processor.rebuild import rebuild_waiting_figures
from calltrail_common import time_zones
from tests.api.conftest import RunningApi, assert_error
from tests.call_processor.test_figures_rebuild import apply, report

KOLKATA = time_zones.zone("Asia/Kolkata")
RANGE = {"startDate": "2026-11-21", "endDate": "2026-11-22"}


async def test_a_new_zone_rebuilds_the_overview_on_local_days(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    assert (await tenant.client.get("/api/time-zone")).json() == {
        "timeZone": "UTC", "figuresTimeZone": "UTC", "usageTimeZone": "UTC",
        "rebuilding": False}
    # 18:00 and 19:00 UTC on the 21st; 23:30 on the 21st and 00:30 on the 22nd in Kolkata.
    await apply(api.connection, tenant.org_id,
                report("late", dt.datetime(2026, 11, 21, 23, 30, tzinfo=KOLKATA), "+14155550101"),
                report("early", dt.datetime(2026, 11, 22, 0, 30, tzinfo=KOLKATA), "+14155550102"))

    async def daily() -> tuple[list[tuple[str, int]], str, bool]:
        body = (await tenant.client.get("/api/stats/overview", params=RANGE)).json()
        return ([(d["date"], d["calls"]) for d in body["daily"]], body["timeZone"],
                body["rebuilding"])

    assert await daily() == ([("2026-11-21", 2), ("2026-11-22", 0)], "UTC", False)
    chosen = await tenant.client.put("/api/time-zone", json={"timeZone": "Asia/Kolkata"})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json() == {"timeZone": "Asia/Kolkata", "figuresTimeZone": "UTC",
                             "usageTimeZone": "UTC", "rebuilding": True}
    assert await daily() == ([("2026-11-21", 2), ("2026-11-22", 0)], "UTC", True)
    assert await rebuild_waiting_figures(api.connection) == 1
    assert await daily() == ([("2026-11-21", 1), ("2026-11-22", 1)], "Asia/Kolkata", False)
    assert (await other.client.get("/api/time-zone")).json()["timeZone"] == "UTC"


async def test_an_unknown_zone_is_a_400_and_changes_nothing(api: RunningApi) -> None:
    tenant = await api.tenant()
    for wrong in ("Mars/Olympus", "../../etc/passwd", ""):
        response = await tenant.client.put("/api/time-zone", json={"timeZone": wrong})
        assert_error(response, 400, "invalid_parameter", "timeZone")
    assert (await tenant.client.get("/api/time-zone")).json()["timeZone"] == "UTC"
