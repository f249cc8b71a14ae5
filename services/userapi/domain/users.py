"""What every endpoint says about a user: user-id validation and `me`, ETags, response models."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from userapi.adapters.access_tokens import Principal
from userapi.domain.accounts import Account
from userapi.platform.errors import bad_request

# Auth0 ids are "<provider>|<id>" (auth0|64f…, google-oauth2|1234, samlp|conn|jane@x.com).
USER_ID_FORMAT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\|[A-Za-z0-9_.@+:=|-]{1,190}"
_USER_ID = re.compile(f"^{USER_ID_FORMAT}$")


def validate_user_id(user_id: str) -> str:
    if not _USER_ID.fullmatch(user_id):
        raise bad_request(
            "user_id must be an Auth0 user id such as 'auth0|64f1c2…' "
            "(provider|id; letters, digits and _ . - @ + : = |; at most 255 characters).",
            error="invalid_user_id",
        )
    return user_id


def etag(profile: dict[str, Any], account: Account | None) -> str:
    """Changes whenever Auth0's profile or the account row changes (both carry updated_at)."""
    stamp = f"{profile.get('user_id')}|{profile.get('updated_at')}|"
    stamp += account.updated_at.isoformat() if account is not None else "-"
    return '"' + hashlib.sha256(stamp.encode()).hexdigest()[:32] + '"'


def etag_matches(header: str | None, current: str) -> bool:
    """RFC 9110 If-Match / If-None-Match: a list of tags or *, weak tags compared weakly."""
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or current in tags


# The response header naming the metadata a read left out (runtime/profiles.allowlisted).
OMITTED_FIELDS = "Omitted-Fields"
# On every response carrying a profile: emails and metadata must not be kept by a browser or a
# shared cache (a proxy, a CDN) and handed to the next caller.
NO_STORE = {"Cache-Control": "no-store"}
_MAX_OMITTED_NAMED = 20


def omitted_fields(names: Iterable[str]) -> dict[str, str]:
    """The Omitted-Fields header for `names`, or none. Keys are percent-encoded (a metadata key
    may hold a comma or a line break) and at most 20 are named, then "...": a header has room
    for a list, not for every key of a pathological profile."""
    named = [quote(name, safe="._-[]") for name in names]
    if not named:
        return {}
    if len(named) > _MAX_OMITTED_NAMED:
        named = [*named[:_MAX_OMITTED_NAMED], "..."]
    return {OMITTED_FIELDS: ", ".join(named)}


def user_path(user_id: str) -> str:
    """This API's `/users/<id>`, the id percent-encoded as one path segment (`|` included)."""
    return "/users/" + quote(user_id, safe="")


def target_user(user_id: str, principal: Principal) -> str:
    """The user a path names: `me` is the caller, which must then be a user, not an app."""
    if user_id != "me":
        return validate_user_id(user_id)
    if principal.subject.endswith("@clients"):
        raise bad_request("'me' needs a user's token; this one belongs to an application.")
    return principal.subject


class UserProfile(BaseModel):
    """The allowlisted subset of an Auth0 profile."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    email: str | None = None
    email_verified: bool | None = None
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    nickname: str | None = None
    picture: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    last_login: str | None = None
    user_metadata: dict[str, Any] = Field(default_factory=dict)
    app_metadata: dict[str, Any] | None = Field(
        default=None, description="Present only when PROFILE_INCLUDE_APP_METADATA is true."
    )


class User(UserProfile):
    account: Account | None = Field(description="The app's row for this user, or null if none.")
