"""auth0-events: `POST /events/auth0`, Auth0's change notifications, so that edits made outside
this API (dashboard, Actions, other apps) reach readers within seconds instead of a cache TTL.

Accepts Event Streams (CloudEvents user.created / user.updated / user.deleted, one or a batch)
and Log Streams (any of the custom webhook's content formats: JSON lines, a JSON array or one
JSON object; `sapi` writes to /api/v2/users/{id}, `sdu` deletions). Delivery is at-least-once
and unordered: events are deduplicated by id, and an event older than what the cache knows of
the user changes nothing.

An event is believed to name a user and a time, nothing more: it never writes profile data.
The shared secret is a bearer token, not a signature over the body, so whoever holds one
delivery can send any body. A change invalidates the user's entry (the next read asks Auth0),
a deletion leaves a tombstone. An event's time is believed up to now + AUTH0_CLOCK_SKEW_SECONDS,
and one older than EVENT_DEDUPE_SECONDS is ignored: its id may be forgotten, so it may be a
replay, and no cached profile can predate it (the window outlasts a fresh entry).

A delivery of more than EVENTS_MAX_ITEMS items is refused whole (413) before any is applied.

One bad item never costs the good ones of its batch: an array element or a line that the strict
body reader refuses (NaN, a raw NUL, nested too deep, not JSON), or that is no event, is listed
in `rejected` with its index and reason (the first REJECTED_LISTED of them; `rejected_total`
counts all), and the others are applied. Only a body in which
nothing can be read (truncated, not JSON, every element refused) is a 400.

Every item is judged before the first call to the shared store. An event id is remembered
only once its change is in the shared cache. When the cache cannot take a change (Redis down),
the delivery is answered 503 so that Auth0 sends it again; the items already applied then
count as duplicates. Applying an event twice (two deliveries at once) is harmless: an
invalidation or a tombstone repeats.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

from fastapi import Request
from pydantic import BaseModel

from userapi.domain import json_values
from userapi.domain.timestamps import parse_timestamp
from userapi.domain.users import validate_user_id
from userapi.platform.errors import APIError, bad_request
from userapi.platform.settings import Settings
from userapi.web import request_body
from userapi.web.dependencies import ResourcesDep
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ErrorBody
from userapi.web.resources import Resources

_USER_PATH = re.compile(r"^/api/v2/users/([^/?#]+)")
_WRITES = {"patch", "put", "delete", "post"}

log = logging.getLogger("userapi.events")
# What the registry (userapi/endpoints/__init__.py) reads.
ENDPOINT = Endpoint(
    "auth0-events",
    None,  # Auth0's stream secret, not an access token
    tags=["events"],
    # Auth0 decides how many events a delivery batches; larger than the other endpoints' bound.
    max_body_bytes=5 * 1024 * 1024,
    management_api=False,  # it applies what Auth0 sends; it never asks Auth0
    database=False,  # profiles in Redis, and the events it has seen
)
router = ENDPOINT.router


class Rejected(BaseModel):
    index: int
    reason: str


# A delivery of millions of refused items is answered with a bounded body, not one entry each
# (a 5 MB array of 2.6M bad elements made a 189 MB response).
REJECTED_LISTED = 100


class EventResult(BaseModel):
    received: int
    applied: int
    duplicates: int
    ignored: int
    rejected: list[Rejected]  # the first REJECTED_LISTED, in body order
    rejected_total: int


class _Invalid(Exception):
    pass


def _authorize(request: Request, settings: Settings) -> None:
    try:
        secret = settings.events_secret()
    except OSError as exc:
        log.error("AUTH0_EVENTS_SECRET_FILE could not be read", extra={"error": repr(exc)})
        raise APIError(503, "not_configured", "The event stream secret could not be read.") from exc
    if secret is None:
        raise APIError(503, "not_configured", "AUTH0_EVENTS_SECRET is not set.")
    given = request.headers.get("authorization", "")
    # Constant time: the secret must not leak through response timing.
    if not (
        hmac.compare_digest(given.encode(), f"Bearer {secret}".encode())
        or hmac.compare_digest(given.encode(), secret.encode())
    ):
        raise APIError(401, "unauthorized", "Invalid or missing event stream secret.",
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip


@dataclass(frozen=True)
class _Unreadable:
    """An element or JSON line that the body reader refused: rejected as an item, like any bad
    event, with the reader's reason."""

    reason: str


async def _items(raw: bytes) -> list[Any]:
    """One JSON document (object or array), or JSON lines: Log Streams' three content formats
    (JSON Object, JSON Array, JSON Lines; "Content Format" in
    https://auth0.com/docs/customize/log-streams/custom-log-streams) and Event Streams'
    CloudEvents, all read by the strict body reader (domain/json_values.py). A body that does not
    read whole is read piece by piece, so that one bad item never costs the good ones."""
    try:
        document = json_values.parse(raw)
    except APIError:
        # In a worker thread: a 5 MB body of small pieces is thousands of reads, and the event
        # loop must not wait for them (it waits, as before, only for the whole-body read).
        items = await asyncio.to_thread(_pieces, raw)
        if items is None:
            raise  # nothing in it reads: the reader's 400 for the whole body says why
        return items
    return document if isinstance(document, list) else [document]


def _pieces(raw: bytes) -> list[Any] | None:
    """Each element of a JSON array, or else each of two or more JSON lines, read on its own;
    one the reader refuses is an _Unreadable item. None when the body is neither (a truncated
    array, not JSON), or is an array none of whose elements reads: refused whole, as a 400,
    which Auth0 does not retry."""
    elements = json_values.array_elements(raw)
    if elements is not None:
        if all(isinstance(element, APIError) for element in elements):
            return None
        return [
            _Unreadable(element.message) if isinstance(element, APIError) else element
            for element in elements
        ]
    lines = [line for line in raw.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    items: list[Any] = []
    for line in lines:
        try:
            items.append(json_values.parse(line))
        except APIError as exc:
            items.append(_Unreadable(exc.message))
    return items


@dataclass(frozen=True)
class _Change:
    """What an event is believed to say: this user changed, or was deleted, at this time."""

    event_id: str
    user_id: str
    at: datetime
    deleted: bool


class _Clock:
    """The bounds an event's time is judged against, taken once per delivery."""

    def __init__(self, settings: Settings) -> None:
        now = datetime.now(UTC)
        self.oldest = now - timedelta(seconds=settings.event_dedupe_seconds)
        self.latest = now + timedelta(seconds=settings.auth0_clock_skew_seconds)

    def judge(self, value: Any) -> datetime | None:
        """The event's time, at most `latest`; None when it is too old to act on."""
        at = parse_timestamp(value)
        if at is None:
            raise _Invalid("the event has no readable time")
        if at < self.oldest:
            return None
        return min(at, self.latest)


def _cloud_event(clock: _Clock, event: dict[str, Any]) -> _Change | Literal["ignored"]:
    event_type = event.get("type")
    data = event.get("data")
    user = data.get("object") if isinstance(data, dict) else None
    if not isinstance(event.get("id"), str) or not isinstance(user, dict):
        raise _Invalid("a CloudEvent needs a string id and data.object")
    if event_type not in ("user.created", "user.updated", "user.deleted"):
        return "ignored"
    try:
        user_id = validate_user_id(str(user.get("user_id", "")))
    except APIError as exc:
        raise _Invalid("data.object.user_id is not an Auth0 user id") from exc
    at = clock.judge(event.get("time"))
    if at is None:
        return "ignored"
    return _Change(event["id"], user_id, at, deleted=event_type == "user.deleted")


def _log_event(clock: _Clock, entry: dict[str, Any]) -> _Change | Literal["ignored"]:
    data = entry.get("data")
    if not isinstance(entry.get("log_id"), str) or not isinstance(data, dict):
        raise _Invalid("a log event needs a string log_id and a data object")
    target: str | None = None
    deletion = data.get("type") == "sdu"
    if data.get("type") == "sapi":
        details = data.get("details") or {}
        request = (details.get("request") or {}) if isinstance(details, dict) else None
        if not isinstance(request, dict):
            raise _Invalid("data.details.request of an sapi log event must be an object")
        match = _USER_PATH.match(str(request.get("path", "")))
        # data.user_id of an sapi entry is the ACTOR; the target is in the request path.
        method = str(request.get("method", "")).lower()
        if match and method in _WRITES:
            target = unquote(match[1])
            deletion = method == "delete" and match.end() == len(str(request.get("path", "")))
    elif data.get("type") == "sdu":
        target = str(data.get("user_id", ""))
    if target is None:
        return "ignored"
    try:
        validate_user_id(target)
    except APIError as exc:
        raise _Invalid("the event names no valid user id") from exc
    at = clock.judge(data.get("date"))
    if at is None:
        return "ignored"
    return _Change(entry["log_id"], target, at, deleted=deletion)


def _judge(clock: _Clock, item: Any) -> _Change | Literal["ignored"]:
    """What an item asks for, with no I/O: a change, or "ignored"; _Invalid if it is no event."""
    if isinstance(item, _Unreadable):
        raise _Invalid(item.reason)
    problem = json_values.unstorable(item)
    if problem is not None:
        raise _Invalid(": ".join(problem))
    if isinstance(item, dict) and "specversion" in item:
        return _cloud_event(clock, item)
    if isinstance(item, dict) and "log_id" in item:
        return _log_event(clock, item)
    raise _Invalid("neither a CloudEvent nor a log stream entry")


async def _apply(
    resources: Resources, change: _Change
) -> Literal["applied", "duplicate", "ignored", "failed"]:
    if await resources.events.seen(change.event_id):
        return "duplicate"
    done = await resources.profiles.changed(change.user_id, change.at, change.deleted)
    if done == "failed":
        return "failed"  # not remembered: Auth0's redelivery applies it
    await resources.events.remember(change.event_id)
    return "applied" if done == "applied" else "ignored"


@router.post(
    "/events/auth0",
    response_model=EventResult,
    responses={
        400: {"model": ErrorBody, "description": "Nothing in the body could be read"},
        401: {"model": ErrorBody, "description": "Wrong or missing shared secret"},
        **request_body.ERROR_RESPONSES,
        413: {
            "model": ErrorBody,
            "description": "The body is larger than the endpoint's bound, or holds more than "
            "EVENTS_MAX_ITEMS events: nothing in it was applied",
        },
        503: {
            "model": ErrorBody,
            "description": "The shared cache could not take a change: send the delivery again",
        },
    },
    summary="Receive Auth0 Event Streams and Log Streams",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": (
                "One CloudEvent or log event, an array of them, or JSON lines: at most "
                "EVENTS_MAX_ITEMS items (1000 by default), or the delivery is a 413. An element "
                "or line that cannot be read is one rejected item; the others are applied."
            ),
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "object"},
                            {"type": "array", "items": {"type": "object"}},
                        ]
                    }
                }
            },
        }
    },
)
async def receive(request: Request, resources: ResourcesDep) -> EventResult:
    _authorize(request, resources.settings)
    # Read after the secret is checked; at most ENDPOINT.max_body_bytes (RequestMiddleware refuses
    # more).
    items = await _items(await request.body())
    limit = resources.settings.events_max_items
    if len(items) > limit:
        # Refused whole, before any change: each item costs the shared store round trips, and
        # a partial delivery would be half applied. Auth0 does not retry a 4xx.
        log.warning("delivery over EVENTS_MAX_ITEMS", extra={"items": len(items), "limit": limit})
        raise APIError(
            413,
            "too_many_events",
            f"The delivery holds {len(items)} events; at most {limit} (EVENTS_MAX_ITEMS) are "
            "accepted at once. Nothing in it was applied.",
        )
    clock = _Clock(resources.settings)
    outcomes = {"applied": 0, "duplicate": 0, "ignored": 0, "failed": 0}
    changes: list[_Change] = []
    rejected: list[Rejected] = []
    rejected_total = 0
    for index, item in enumerate(items):
        if index % 1024 == 1023:
            # Judging needs no I/O: a large body must not hold the event loop until the last item.
            await asyncio.sleep(0)
        try:
            judged = _judge(clock, item)
        except _Invalid as exc:
            reason = str(exc)
        except Exception:
            # An item shaped in a way nobody foresaw is a bug to fix, not a reason to fail the
            # good items beside it: Auth0 would resend the whole delivery, and fail it again.
            log.exception("event failed", extra={"index": index})
            reason = "the event could not be processed"
        else:
            if isinstance(judged, _Change):
                changes.append(judged)
            else:
                outcomes[judged] += 1
            continue
        rejected_total += 1
        if len(rejected) < REJECTED_LISTED:
            rejected.append(Rejected(index=index, reason=reason))
    if rejected:
        # One line per delivery, not one per item: a million refused items are not a million
        # log lines, which cost far more than judging the items.
        first = [item.model_dump() for item in rejected[:10]]
        log.warning("rejected events", extra={"rejected": rejected_total, "first": first})
    if rejected and rejected_total == len(items):
        raise bad_request("No event in the body could be read: " + rejected[0].reason)
    for change in changes:
        outcomes[await _apply(resources, change)] += 1
    if outcomes["failed"]:
        # 5xx, not 4xx: Auth0 retries a delivery only after a 5xx or no answer.
        raise APIError(
            503,
            "cache_unavailable",
            f"{outcomes['failed']} of {len(items)} events could not be applied to the shared "
            "cache; send the delivery again (the events already applied count as duplicates).",
            {"Retry-After": "1"},
        )
    return EventResult(
        received=len(items),
        applied=outcomes["applied"],
        duplicates=outcomes["duplicate"],
        ignored=outcomes["ignored"],
        rejected=rejected,
        rejected_total=rejected_total,
    )
