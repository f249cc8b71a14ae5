"""The audit trail: who (token subject) did what (endpoint, target, field NAMES) and when."""

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
        " changed_fields, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        secrets.token_hex(16),
        datetime.now(UTC),
        actor,
        endpoint,
        action,
        target_user_id,
        sorted(set(changed_fields)),
        context.request_id(),
    )
