"""How calls ended, from Vapi's `endedReason`, in the five buckets the overview shows, and
how many calls succeeded (`success_counts`). Pure.

Vapi has dozens of reasons and adds more; a reason is bucketed by what it says (a customer
or assistant ending the call is a completed call; any error or failure is a failed one), so
a new pipeline error lands in `failed` without a code change. What fits none is `other`.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

from calltrail_common.structured_outputs import passes
from calltrail_common.success_measures import SuccessMeasure

Bucket = Literal["completed", "voicemail", "noAnswer", "busy", "failed", "other"]
BUCKETS: tuple[Bucket, ...] = ("completed", "voicemail", "noAnswer", "busy", "failed", "other")

_COMPLETED = frozenset({
    "customer-ended-call", "assistant-ended-call", "assistant-said-end-call-phrase",
    "assistant-forwarded-call", "assistant-ended-call-after-message-spoken",
    "assistant-ended-call-with-hangup-task", "silence-timed-out", "exceeded-max-duration",
    "manually-canceled",
})


def ended_reason_bucket(reason: str) -> Bucket:
    reason = reason.strip().lower()
    if "voicemail" in reason:
        return "voicemail"
    if "busy" in reason:
        return "busy"
    if "did-not-answer" in reason or "no-answer" in reason or "not-answered" in reason:
        return "noAnswer"
    if reason in _COMPLETED:
        return "completed"
    if "error" in reason or "fail" in reason or "fault" in reason:
        return "failed"
    return "other"


def is_success(evaluation: str) -> bool | None:
    """`analysis.successEvaluation` as a verdict: Vapi's default rubric answers "true" or
    "false"; a numeric or descriptive rubric gives no verdict here (None)."""
    value = evaluation.strip().lower()
    if value in ("true", "pass", "passed", "success", "successful", "yes"):
        return True
    if value in ("false", "fail", "failed", "failure", "unsuccessful", "no"):
        return False
    return None


def success_counts(outcomes: Iterable[tuple[str | None, int]],
                   signals: Iterable[tuple[Decimal, str | None, int]],
                   measure: SuccessMeasure | None) -> tuple[int, int]:
    """(evaluated calls, successful calls) over a range (decision 41).

    `outcomes`: (successEvaluation, calls) of every call; `signals`: (value,
    successEvaluation, calls) of the calls that carry the organization's chosen source.
    A call with the source counts by it (a boolean output when true, a scorecard at or
    above the pass mark); a call without it counts by its successEvaluation (`is_success`);
    no measure: every call by its successEvaluation. Exact: the calls with the source are
    taken out of the successEvaluation counts by the evaluation stored beside them."""
    evaluated = succeeded = 0
    for evaluation, calls in outcomes:
        verdict = None if evaluation is None else is_success(evaluation)
        if verdict is not None:
            evaluated += calls
            succeeded += calls if verdict else 0
    if measure is None:
        return evaluated, succeeded
    for value, evaluation, calls in signals:
        verdict = None if evaluation is None else is_success(evaluation)
        if verdict is not None:  # counted above by its evaluation: by its source instead
            evaluated -= calls
            succeeded -= calls if verdict else 0
        evaluated += calls
        succeeded += calls if passes(value, measure.kind, measure.pass_mark) else 0
    return evaluated, succeeded
