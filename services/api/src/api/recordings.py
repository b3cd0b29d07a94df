"""A call's recording, as a URL a browser can play now (decision 39).

Vapi's storage is private and the URLs in webhooks expire, so a stored URL is only the
fallback. With the organization's connected key, Vapi's `GET /call/{id}/<channel>-recording`
answers a redirect to a short-lived URL; the api answers the same redirect (no audio passes
through it; the storage serves Range requests itself) and keeps the URL in memory until
shortly before it expires, so a page's player and its seeks ask Vapi once.

The URLs are credentials while they last: never logged, never in an error message.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from api.shapes import https_only

Channel = Literal["mono", "stereo", "customer", "assistant"]

UNKNOWN_EXPIRY_SECONDS = 60.0  # how long a URL is kept when it does not say when it expires
EXPIRY_MARGIN_SECONDS = 30.0  # a URL is dropped this long before it expires
MAX_CACHED = 10_000


def stored_url(channel: Channel, recording_url: str | None,
               stereo_recording_url: str | None) -> str | None:
    """The stored https URL for `channel`: the webhooks carry mono and stereo only."""
    if channel == "mono":
        return https_only(recording_url)
    if channel == "stereo":
        return https_only(stereo_recording_url)
    return None


def url_expiry(url: str) -> datetime | None:
    """When a presigned URL expires, if it says so: `Expires`/`expires` (epoch seconds, as
    Google Cloud Storage, CloudFront and Vapi's own signed URLs), or S3's `X-Amz-Date` plus
    `X-Amz-Expires`. None when it does not, or says so unreadably."""
    try:
        query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    except ValueError:
        return None
    try:
        if "expires" in query:
            return datetime.fromtimestamp(int(query["expires"]), UTC)
        if "x-amz-date" in query and "x-amz-expires" in query:
            signed = datetime.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return datetime.fromtimestamp(signed.timestamp() + int(query["x-amz-expires"]), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def keep_seconds(url: str, now: datetime) -> float:
    """How long a fresh URL may be handed out again: until EXPIRY_MARGIN_SECONDS before it
    expires, or UNKNOWN_EXPIRY_SECONDS when it does not say; never below 0."""
    expires = url_expiry(url)
    if expires is None:
        return UNKNOWN_EXPIRY_SECONDS
    return max(0.0, (expires - now).total_seconds() - EXPIRY_MARGIN_SECONDS)


Key = tuple[uuid.UUID, str, str]


class RecordingLinks:
    """Fresh recording URLs in memory, per (organization, call, channel), each until its
    time is up; at most `max_size`, the oldest dropped first."""

    def __init__(self, max_size: int = MAX_CACHED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._links: OrderedDict[Key, tuple[str, float]] = OrderedDict()
        self._max_size = max_size
        self._clock = clock

    def get(self, key: Key) -> str | None:
        found = self._links.get(key)
        if found is None:
            return None
        if found[1] <= self._clock():
            del self._links[key]
            return None
        return found[0]

    def put(self, key: Key, url: str, seconds: float) -> None:
        if seconds <= 0:
            return
        self._links[key] = (url, self._clock() + seconds)
        self._links.move_to_end(key)
        while len(self._links) > self._max_size:
            self._links.popitem(last=False)

    def forget(self, org_id: uuid.UUID) -> None:
        """Drop an organization's URLs (its key was disconnected)."""
        for key in [k for k in self._links if k[0] == org_id]:
            del self._links[key]
