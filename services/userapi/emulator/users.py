"""The emulator's in-memory users with Auth0's write rules (validation, metadata merge, 409s)."""

from __future__ import annotations

import copy
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from userapi.emulator.errors import ManagementError, invalid_body, invalid_query
from userapi.emulator.query import field_values, parse_query

STRING_FIELDS = frozenset(
    {"connection", "email", "password", "username", "name", "given_name", "family_name",
     "nickname", "picture", "user_id", "phone_number"}
)  # fmt: skip
BOOLEAN_FIELDS = frozenset({"email_verified", "verify_email", "blocked", "phone_verified"})
METADATA_FIELDS = ("user_metadata", "app_metadata")
CREATABLE = STRING_FIELDS | BOOLEAN_FIELDS | frozenset(METADATA_FIELDS)
UPDATABLE = (CREATABLE - {"user_id"}) | {"client_id", "verify_password"}
# Copied from a creation body onto the stored user (connection, password and verify_* are not).
PROFILE_FIELDS = (
    "username", "name", "given_name", "family_name", "nickname", "picture", "blocked",
    "phone_number", "phone_verified",
)  # fmt: skip
SOCIAL_PROVIDERS = frozenset({"google-oauth2", "github", "facebook", "apple", "windowslive"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NOT_FOUND = ("The user does not exist.", "inexistent_user")


def now_iso() -> str:
    """Auth0's timestamp format: UTC, milliseconds, a Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def user_exists() -> ManagementError:
    return ManagementError(409, "The user already exists.", "auth0_idp_error")


def _check_metadata_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if "." in key or "$" in key:
                raise invalid_body(f"Metadata keys may not contain '.' or '$': {path}.{key}")
            _check_metadata_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_metadata_keys(item, path)


def merge_metadata(current: dict[str, Any], patch: Any, name: str) -> dict[str, Any]:
    """Auth0's rule: first-level keys merged, nested objects replaced whole, null deletes."""
    if not isinstance(patch, dict):
        raise invalid_body(f"Expected type object but found type {_json_type(patch)} ({name})")
    _check_metadata_keys(patch, name)
    merged = copy.deepcopy(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _validate_types(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid_body(f"Additional properties not allowed: {','.join(unknown)}")
    for name, value in body.items():
        if name in STRING_FIELDS and not isinstance(value, str):
            raise invalid_body(f"Expected type string but found type {_json_type(value)} ({name})")
        if name in BOOLEAN_FIELDS and not isinstance(value, bool):
            found = _json_type(value)
            raise invalid_body(f"Expected type boolean but found type {found} ({name})")
    email = body.get("email")
    if isinstance(email, str) and not _EMAIL.fullmatch(email):
        raise invalid_body(f"Object didn't pass validation for format email: {email}")


def _connections(user: dict[str, Any]) -> set[str]:
    return {str(i.get("connection")) for i in user.get("identities") or [] if isinstance(i, dict)}


class UserStore:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        # Never part of a profile: what the password grant checks, and the user's RBAC grants.
        self.passwords: dict[str, str] = {}
        self.permissions: dict[str, list[str]] = {}

    def load(self, seed: list[dict[str, Any]]) -> None:
        for raw in seed:
            user = copy.deepcopy(raw)
            password = user.pop("password", None)
            permissions = user.pop("permissions", [])
            user_id = str(user["user_id"])
            user.setdefault("created_at", now_iso())
            user.setdefault("updated_at", user["created_at"])
            self.users[user_id] = user
            if isinstance(password, str) and password:
                self.passwords[user_id] = password
            self.permissions[user_id] = [str(p) for p in permissions]

    def get(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise ManagementError(404, *_NOT_FOUND)
        return user

    def by_email(self, email: str) -> list[dict[str, Any]]:
        """Exact match; database connections store emails lower-cased, so a query is folded too."""
        wanted = {email, email.lower()}
        return [u for u in self.users.values() if u.get("email") in wanted]

    def login_candidates(self, username: str) -> list[dict[str, Any]]:
        """Users the password grant may mean: database logins are case-insensitive."""
        wanted = username.lower()
        return [
            u
            for u in self.users.values()
            if wanted in (str(u.get("email", "")).lower(), str(u.get("username", "")).lower())
        ]

    def _email_taken(self, email: str, connection: str, except_id: str | None = None) -> bool:
        return any(
            connection in _connections(u) and u["user_id"] != except_id
            for u in self.by_email(email)
        )

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        _validate_types(body, CREATABLE)
        connection = body.get("connection")
        if not connection:
            raise invalid_body("Missing required property: connection")
        for name in METADATA_FIELDS:
            if name in body:
                merge_metadata({}, body[name], name)
        email = body["email"].lower() if "email" in body else None
        if email is not None and self._email_taken(email, connection):
            raise user_exists()
        provider = connection if connection in SOCIAL_PROVIDERS else "auth0"
        local_id = body.get("user_id") or secrets.token_hex(12)
        # Auth0 adds the provider prefix itself; a caller passing a full id means the same user.
        local_id = local_id.removeprefix(f"{provider}|")
        user_id = f"{provider}|{local_id}"
        if user_id in self.users:
            raise user_exists()
        stamp = now_iso()
        user: dict[str, Any] = {"user_id": user_id, "created_at": stamp, "updated_at": stamp}
        if email is not None:
            user["email"] = email
            user["email_verified"] = bool(body.get("email_verified", False))
        for name in PROFILE_FIELDS:
            if name in body:
                user[name] = body[name]
        # Auth0 fills these from the email when they are not given.
        handle = email or body.get("username") or user_id
        user.setdefault("name", handle)
        user.setdefault("nickname", handle.split("@")[0])
        user.setdefault("picture", "https://s.gravatar.com/avatar/emulator.png")
        user["identities"] = [
            {
                "connection": connection,
                "provider": provider,
                "user_id": local_id,
                "isSocial": provider in SOCIAL_PROVIDERS,
            }
        ]
        for name in METADATA_FIELDS:
            user[name] = merge_metadata({}, body.get(name) or {}, name)
        self.users[user_id] = user
        if isinstance(body.get("password"), str):
            self.passwords[user_id] = body["password"]
        self.permissions[user_id] = []
        return user

    def update(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        user = self.get(user_id)
        _validate_types(body, UPDATABLE)
        if not body:
            raise invalid_body("Too few properties defined (0), minimum 1")
        updated = copy.deepcopy(user)
        for name, value in body.items():
            if name in METADATA_FIELDS:
                updated[name] = merge_metadata(updated.get(name) or {}, value, name)
            elif name == "email":
                email = value.lower()
                connection = body.get("connection") or next(iter(_connections(user)), "")
                if self._email_taken(email, connection, except_id=user_id):
                    raise user_exists()
                updated["email"] = email
            elif name in PROFILE_FIELDS or name == "email_verified":
                updated[name] = value
            # connection, client_id, password and verify_* steer the update; not stored.
        updated["updated_at"] = now_iso()
        self.users[user_id] = updated
        if isinstance(body.get("password"), str):
            self.passwords[user_id] = body["password"]
        return updated

    def delete(self, user_id: str) -> None:
        self.users.pop(user_id, None)
        self.passwords.pop(user_id, None)
        self.permissions.pop(user_id, None)

    def search(self, query: str | None, sort: str | None) -> list[dict[str, Any]]:
        matcher = parse_query(query) if query else None
        found = [u for u in self.users.values() if matcher is None or matcher(u)]
        if not sort:
            return found
        field_name, _, direction = sort.partition(":")
        if not field_name or direction not in ("1", "-1"):
            raise invalid_query(f"sort must be field:1 or field:-1, got {sort}")
        present = [u for u in found if field_values(u, field_name)]
        absent = [u for u in found if not field_values(u, field_name)]
        present.sort(key=lambda u: _sort_key(field_values(u, field_name)[0]))
        if direction == "-1":
            present.reverse()
        # Users without the field come last in either direction.
        return present + absent


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, int | float):
        return (1, float(value), "")
    return (2, 0.0, str(value).lower())


def project(user: dict[str, Any], fields: str | None, include_fields: bool) -> dict[str, Any]:
    """Auth0's `fields` + `include_fields` (true: only these; false: all but these)."""
    if not fields:
        return user
    names = {name.strip() for name in fields.split(",") if name.strip()}
    if include_fields:
        return {k: v for k, v in user.items() if k in names}
    return {k: v for k, v in user.items() if k not in names}
