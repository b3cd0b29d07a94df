"""How calls ended, from Vapi's `endedReason`, in the five buckets the overview shows. Pure.

Vapi has dozens of reasons and adds more; a reason is bucketed by what it says (a customer
or assistant ending the call is a completed call; any error or failure is a failed one), so
a new pipeline error lands in `failed` without a code change. What fits none is `other`.
"""

from __future__ import annotations

from typing import Literal

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
