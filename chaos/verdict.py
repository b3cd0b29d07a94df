"""What is checked after each webhook fault, and the table it is reported in.

What each row says:

    sent      webhooks sent (each counted once, however often it was retried)
    200       webhooks finally answered 200; `gave up`: never answered 200 after all retries
    calls     call rows stored / calls with a call event (status-update, report) answered 200
    lost      answered 200 but missing: the body is not in the `events` archive, or its call
              is missing, or (for a 200-answered end-of-call-report) the call lacks the
              report's final values (cost, ended reason, status ended, report_received)
    twice     counted twice: daily_stats calls above the call rows, new leads above the
              leads, duplicate call or lead rows; `stats=agg`: daily_stats equal the
              aggregate over calls and leads, leads' counts and links right
              (`calltrail_testkit.state.assert_invariants`)
    drained   seconds from the fault's end until the backlog is gone: the queue and the
              archive gap (200s minus events archived) at most a quarter second's load, and
              ingest's spool empty
    resumed   seconds from the fault's end until a call whose first webhook was sent at
              that moment is visible as a row: processing resumed on its own, end to end
    during    attempts sent during the fault, by answer, and their p99 answer time

Goals: 0 lost, 0 counted twice, stats equal aggregates, resumed within 10 s, every time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from call_processor.events import CALL_EVENT_TYPES
from calltrail_testkit.state import assert_invariants
from calltrail_testkit.vapi_sender import Sender
from chaos.rig import Plan, Rig, Sample, body_digest

RESUME_GOAL_SECONDS = 10


async def account(rig: Rig, sender: Sender) -> dict[str, Any]:
    """Lost and counted-twice figures of the run, from the database once it settled."""
    connection = await rig.stack.db()
    try:
        archived = {r[0] for r in await connection.fetch(
            "SELECT DISTINCT md5(body) FROM events")}
        calls = {r["id"]: r for r in await connection.fetch(
            "SELECT id, org_id::text AS org_id, status, report_received, cost,"
            " ended_reason FROM calls")}
        totals = await connection.fetchrow(TOTALS)
        try:
            await assert_invariants(connection)
            invariants = True
        except AssertionError:
            invariants = False
    finally:
        await connection.close()
    calls.pop(rig.ready_probe_call, None)
    result = check_deliveries(sender, archived, calls, totals)
    result["calls_stored"] = len(calls)
    result["stats_equal_aggregates"] = invariants and result["stats_equal_aggregates"]
    result["dead_letters"] = await rig.dead_letters()
    return result


TOTALS = """
SELECT (SELECT count(*) FROM calls) AS calls,
       (SELECT count(DISTINCT (org_id, id)) FROM calls) AS distinct_calls,
       (SELECT count(*) FROM leads) AS leads,
       (SELECT count(DISTINCT (org_id, phone_number)) FROM leads) AS distinct_leads,
       (SELECT count(*) FROM leads WHERE first_inbound_at IS NOT NULL) AS inbound_leads,
       (SELECT coalesce(sum(calls), 0) FROM daily_stats) AS stats_calls,
       (SELECT coalesce(sum(new_leads), 0) FROM daily_stats) AS stats_new_leads,
       (SELECT coalesce(sum(cost), 0) FROM daily_stats) AS stats_cost,
       (SELECT coalesce(sum(cost), 0) FROM calls WHERE stats_day IS NOT NULL) AS calls_cost
"""


def report_values(body: bytes) -> tuple[Decimal | None, str | None]:
    message = orjson.loads(body)["message"]
    cost = message.get("cost")
    return (None if cost is None else Decimal(str(cost))), message.get("endedReason")


def cost_matches(stored: Decimal | None, sent: Decimal | None) -> bool:
    """Equal to the cent's hundredth: direct-write stores a float's binary expansion."""
    if sent is None:
        return True
    return stored is not None and abs(stored - sent) < Decimal("0.000001")


def check_deliveries(sender: Sender, archived: set[str], calls: dict[str, Any],
                     totals: Any) -> dict[str, Any]:
    """Lost and counted-twice figures of one run, from what the sender saw answered 200."""
    accepted = [d for d in sender.deliveries if d.accepted]
    lost_events = [d for d in accepted if body_digest(d.event.body) not in archived]
    # A call must have a row once one of its call events (a status-update, a report) was
    # answered 200; chatter alone (speech, conversation updates) is archived, not a call.
    expected = {d.event.call_id: d.event.org.org_id for d in accepted
                if d.event.message_type in CALL_EVENT_TYPES}
    missing = [c for c, org in expected.items()
               if c not in calls or calls[c]["org_id"] != org]
    wrong = []
    for delivery in accepted:
        event = delivery.event
        row = calls.get(event.call_id)
        if event.message_type != "end-of-call-report" or row is None:
            continue
        cost, reason = report_values(event.body)
        if not (row["report_received"] and row["status"] == "ended"
                and row["ended_reason"] == reason
                and cost_matches(row["cost"], cost)):
            wrong.append(event.call_id)
    twice = (max(0, totals["stats_calls"] - totals["calls"])
             + max(0, totals["stats_new_leads"] - totals["inbound_leads"])
             + totals["calls"] - totals["distinct_calls"]
             + totals["leads"] - totals["distinct_leads"])
    return {
        "sent": len(sender.deliveries),
        "answered_200": len(accepted),
        "gave_up": len(sender.deliveries) - len(accepted),
        "attempts": sum(len(d.attempts) for d in sender.deliveries),
        "calls_expected": len(expected),
        "calls_stored": int(totals["calls"]),
        "lost": len(lost_events) + len(set(missing) | set(wrong)),
        "lost_events": len(lost_events),
        "calls_missing": len(missing),
        "calls_wrong": len(set(wrong)),
        "lost_examples": [{"call_id": d.event.call_id, "type": d.event.message_type}
                          for d in lost_events[:5]] + [{"call_id": c} for c in missing[:5]],
        "counted_twice": int(twice),
        "stats_equal_aggregates": (totals["stats_calls"] == totals["calls"]
                                   and totals["stats_new_leads"] == totals["inbound_leads"]
                                   and totals["stats_cost"] == totals["calls_cost"]),
        "totals": {k: (float(v) if isinstance(v, Decimal) else int(v))
                   for k, v in dict(totals).items()},
    }


def goal_problems(result: dict[str, Any], resumed: float | None) -> list[str]:
    problems = []
    if result["lost"]:
        problems.append(f"{result['lost']} lost ({result['lost_events']} events not archived,"
                        f" {result['calls_missing']} calls missing,"
                        f" {result['calls_wrong']} calls without their report's values)")
    if result["counted_twice"]:
        problems.append(f"{result['counted_twice']} counted twice")
    if not result["stats_equal_aggregates"]:
        problems.append("daily_stats differ from the aggregate over calls and leads")
    if resumed is None or resumed > RESUME_GOAL_SECONDS:
        problems.append(f"processing resumed after {resumed} s (goal {RESUME_GOAL_SECONDS} s)")
    return problems


def longest_stall(samples: list[Sample], start: float, end: float) -> float:
    """The longest time within [start, end] that the archive did not grow while accepted
    webhooks waited for it: processing stood still."""
    longest, moved_at = 0.0, start
    last: int | None = None
    for sample in samples:
        if sample.at < start or sample.archived is None:
            continue
        if sample.at > end:
            break
        if sample.archived != last or sample.accepted <= sample.archived:
            moved_at = sample.at  # it grew, or there was nothing to do
        else:
            longest = max(longest, sample.at - moved_at)
        last = sample.archived
    return round(longest, 2)


def drained_seconds(samples: list[Sample], end: float, threshold: float) -> float | None:
    for sample in samples:
        if sample.at < end or sample.queue is None or sample.archived is None:
            continue
        if sample.queue <= threshold and sample.accepted - sample.archived <= threshold \
                and sample.spool == 0:
            return round(sample.at - end, 2)
    return None


# --- the table ---------------------------------------------------------------------------


def print_webhook_table(rows: list[dict[str, Any]], plan: Plan) -> None:
    print()
    print(f"faults under {plan.rate:g} webhooks/s for {plan.duration:g} s, each fault "
          f"{plan.fault_seconds:g} s from {plan.fault_at:g} s (processor kill every "
          f"{plan.kill_every:g} s); retries: exponential from 1 s, <= 10 s apart, 8 retries")
    header = (f"{'fault':<36}{'sent':>7}{'200':>7}{'gave up':>8}{'calls':>13}{'lost':>6}"
              f"{'twice':>6}{'stats=agg':>10}{'drained s':>10}{'resumed s':>10}"
              f"  during the fault: answers, p99 ms")
    print(header)
    for row in rows:
        if "skipped" in row:
            print(f"{row['fault']:<36}skipped: {row['skipped']}")
            continue
        if "error" in row:
            print(f"{row['fault']:<36}ERROR: {row['error']}")
            continue
        during = row["during_fault"]
        answers = ", ".join(f"{k}: {v}" for k, v in during["by_answer"].items())
        calls = f"{row['calls_stored']}/{row['calls_expected']}"
        print(f"{row['fault']:<36}{row['sent']:>7}{row['answered_200']:>7}{row['gave_up']:>8}"
              f"{calls:>13}{row['lost']:>6}{row['counted_twice']:>6}"
              f"{'yes' if row['stats_equal_aggregates'] else 'NO':>10}"
              f"{fmt(row['drained_s']):>10}{fmt(row['resumed_s']):>10}"
              f"  {answers}; p99 {fmt(during['p99_ms'])}")
        for problem in row.get("problems", []):
            print(f"{'':<36}  ! {problem}")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def print_row_summary(row: dict[str, Any]) -> None:
    if "skipped" in row:
        print(f"  skipped: {row['skipped']}", flush=True)
        return
    if "error" in row:
        print(f"  {row['error']}", flush=True)
        return
    print(f"  sent {row['sent']}, 200 {row['answered_200']}, lost {row['lost']}, twice "
          f"{row['counted_twice']}, drained {row['drained_s']} s, resumed {row['resumed_s']} s"
          + (f"; {'; '.join(row['problems'])}" if row["problems"] else ""), flush=True)
