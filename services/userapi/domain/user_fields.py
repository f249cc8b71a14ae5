"""The request field types create-user and update-user share, each with one set of limits and
one error message: names, email, plan, picture, and metadata (Auth0's user_metadata and
app_metadata, the account's preferences) with its one key and size check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from userapi.domain.json_values import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    json_size,
    unstorable,
)

# A sanity check only; Auth0 validates the address itself.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

Name = Annotated[str, Field(min_length=1, max_length=150)]
Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]
Password = Annotated[str, Field(min_length=8, max_length=128)]
Picture = Annotated[str, Field(max_length=2048, pattern=r"^https://")]
Plan = Annotated[str, Field(min_length=1, max_length=64)]


def _metadata(auth0_keys: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key or (auth0_keys and ("." in key or "$" in key)):
                raise ValueError(f"key {key!r} may not be empty or contain '.' or '$'")
        problem = unstorable(value, METADATA_MAX_DEPTH)
        if problem is not None:
            raise ValueError(": ".join(problem))
        size = json_size(value)
        if size > METADATA_MAX_BYTES:
            raise ValueError(f"{size} bytes of JSON; at most {METADATA_MAX_BYTES}")
        return value

    return check


# Auth0's user_metadata and app_metadata, and the account's preferences (PostgreSQL JSONB).
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata(auth0_keys=True))]
Preferences = Annotated[dict[str, Any], AfterValidator(_metadata(auth0_keys=False))]
