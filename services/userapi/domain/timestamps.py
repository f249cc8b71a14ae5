"""Times as Auth0 writes them (`updated_at`, `created_at`, an event's `time`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time as Auth0 writes it; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # Auth0 writes UTC; one without an offset is read as UTC rather than failing to compare.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
