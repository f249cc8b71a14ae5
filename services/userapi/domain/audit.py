"""The audit trail: who (token subject) did what (endpoint, target, field NAMES) and when.

Each row names its request twice: `request_id`, the id the caller saw (its own X-Request-Id
when it sent one), and `server_request_id`, made by the server for that request alone, so that
a caller reusing or forging an id cannot make two rows, or a row and another request's log
lines, look like one request."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from userapi.adapters.database import Session
from userapi.platform import context


async def record(
    session: Session,
    *,
    actor: str,
    endpoint: str,
    action: str,
    target_user_id: str,
    changed_fields: Iterable[str] = (),
) -> None:
    # Field names only: values may be passwords, emails or metadata the trail must not copy.
    await session.execute(
        "INSERT INTO audit_log (id, occurred_at, actor, endpoint, action, target_user_id,"
        " changed_fields, request_id, server_request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        secrets.token_hex(16),
        datetime.now(UTC),
        actor,
        endpoint,
        action,
        target_user_id,
        sorted(set(changed_fields)),
        context.request_id(),
        context.server_request_id(),
    )
