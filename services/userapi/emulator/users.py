"""The emulator's in-memory users, with Auth0's write rules and a subset of its v3 search syntax."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

CREATABLE = {
    "connection", "email", "password", "username", "name", "given_name", "family_name",
    "nickname", "picture", "user_metadata", "app_metadata", "email_verified", "verify_email",
    "blocked", "user_id", "phone_number", "phone_verified",
}  # fmt: skip
UPDATABLE = CREATABLE - {"user_id"}
SEARCHABLE = {
    "user_id", "email", "email_verified", "name", "given_name", "family_name", "nickname",
    "username", "created_at", "updated_at", "last_login", "blocked", "identities.connection",
}  # fmt: skip


class ManagementError(Exception):
    """Rendered as Auth0's error body: {statusCode, error, message, errorCode}."""

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def invalid_body(message: str) -> ManagementError:
    return ManagementError(400, f"Payload validation error: '{message}'.", "invalid_body")


def now_iso() -> str:
    # Auth0's format: milliseconds and a Z.
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def merge_metadata(current: dict[str, Any], patch: dict[str, Any], name: str) -> dict[str, Any]:
    """Auth0's rule: first-level keys merged, nested objects replaced whole, null deletes."""
    if not isinstance(patch, dict):
        raise invalid_body(f"Expected type object but found type {type(patch).__name__} in {name}")
    merged = dict(current)
    for key, value in patch.items():
        if "." in key or "$" in key:
            raise invalid_body(f"Metadata keys may not contain '.' or '$' ({name}.{key})")
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


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
            user.setdefault("user_metadata", {})
            user.setdefault("app_metadata", {})
            self.users[user_id] = user
            if password:
                self.passwords[user_id] = password
            self.permissions[user_id] = list(permissions)

    def get(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise ManagementError(404, "The user does not exist.", "inexistent_user")
        return user

    def by_email(self, email: str) -> list[dict[str, Any]]:
        wanted = email.lower()
        return [u for u in self.users.values() if str(u.get("email", "")).lower() == wanted]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - CREATABLE)
        if unknown:
            raise invalid_body(f"Additional properties not allowed: {','.join(unknown)}")
        connection = body.get("connection")
        if not isinstance(connection, str) or not connection:
            raise invalid_body("Missing required property: connection")
        email = body.get("email")
        if email is not None:
            if not isinstance(email, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                raise invalid_body("Object didn't pass validation for format email: " + str(email))
            email = email.lower()
            for other in self.by_email(email):
                if any(i.get("connection") == connection for i in other.get("identities", [])):
                    raise ManagementError(409, "The user already exists.", "auth0_idp_error")
        user_id = str(body.get("user_id") or secrets.token_hex(12))
        user_id = user_id if "|" in user_id else f"auth0|{user_id}"
        if user_id in self.users:
            raise ManagementError(409, "The user already exists.", "auth0_idp_error")
        stamp = now_iso()
        user: dict[str, Any] = {
            "user_id": user_id,
            "email": email,
            "email_verified": bool(body.get("email_verified", False)),
            "created_at": stamp,
            "updated_at": stamp,
            "identities": [
                {
                    "connection": connection,
                    "provider": "auth0",
                    "user_id": user_id.split("|", 1)[1],
                    "isSocial": False,
                }
            ],
            "user_metadata": merge_metadata({}, body.get("user_metadata") or {}, "user_metadata"),
            "app_metadata": merge_metadata({}, body.get("app_metadata") or {}, "app_metadata"),
            "logins_count": 0,
        }
        for name in ("username", "name", "given_name", "family_name", "nickname", "picture",
                     "blocked", "phone_number", "phone_verified"):  # fmt: skip
            if name in body:
                user[name] = body[name]
        user.setdefault("name", email or user_id)
        user.setdefault("nickname", (email or user_id).split("@")[0])
        user.setdefault("picture", "https://s.gravatar.com/avatar/emulator.png")
        self.users[user_id] = user
        if isinstance(body.get("password"), str):
            self.passwords[user_id] = body["password"]
        self.permissions[user_id] = []
        return user

    def update(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        user = self.get(user_id)
        unknown = sorted(set(body) - UPDATABLE)
        if unknown:
            raise invalid_body(f"Additional properties not allowed: {','.join(unknown)}")
        updated = copy.deepcopy(user)
        for name, value in body.items():
            if name in ("user_metadata", "app_metadata"):
                updated[name] = merge_metadata(updated.get(name) or {}, value, name)
            elif name == "password":
                continue
            elif name == "email":
                updated["email"] = str(value).lower()
            elif name != "connection":
                updated[name] = value
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
        matcher = parse_query(query) if query else (lambda _: True)
        found = [u for u in self.users.values() if matcher(u)]
        if sort:
            field_name, _, direction = sort.partition(":")
            if direction not in ("1", "-1") or not field_name:
                raise ManagementError(
                    400, "Invalid sort: use field:1 or field:-1", "invalid_query_string"
                )
            present = [u for u in found if _lookup(u, field_name) is not None]
            absent = [u for u in found if _lookup(u, field_name) is None]
            present.sort(key=lambda u: str(_lookup(u, field_name)), reverse=direction == "-1")
            found = present + absent
        return found


def project(user: dict[str, Any], fields: str | None, include_fields: bool) -> dict[str, Any]:
    if not fields:
        return user
    names = {f.strip() for f in fields.split(",") if f.strip()}
    if include_fields:
        return {k: v for k, v in user.items() if k in names}
    return {k: v for k, v in user.items() if k not in names}


def _lookup(user: dict[str, Any], path: str) -> Any:
    value: Any = user
    for part in path.split("."):
        if isinstance(value, list):
            values = [item.get(part) for item in value if isinstance(item, dict)]
            value = next((v for v in values if v is not None), None)
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


# Lucene subset ------------------------------------------------------------------------------------
# query  := or ; or := and ("OR" and)* ; and := unary (["AND"] unary)* ; unary := "NOT" unary |
# "(" query ")" | field ":" value ; value := word | "quoted" ; a trailing * in a word is a prefix.

_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|([^\s()"]+))')
Matcher = Callable[[dict[str, Any]], bool]


def _query_error(message: str) -> ManagementError:
    return ManagementError(400, f"Query validation error: {message}", "invalid_query_string")


def _tokens(query: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None:
            if query[position:].strip():
                raise _query_error(f"cannot parse {query[position:]!r}")
            break
        tokens.append(next(g for g in match.groups() if g is not None))
        position = match.end()
    return tokens


def parse_query(query: str) -> Matcher:
    tokens = _tokens(query)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise _query_error("unexpected end of query")
        position += 1
        return tokens[position - 1]

    def parse_or() -> Matcher:
        parts = [parse_and()]
        while peek() == "OR":
            take()
            parts.append(parse_and())
        return lambda u: any(p(u) for p in parts)

    def parse_and() -> Matcher:
        parts = [parse_unary()]
        while peek() not in (None, "OR", ")"):
            if peek() == "AND":
                take()
            parts.append(parse_unary())
        return lambda u: all(p(u) for p in parts)

    def parse_unary() -> Matcher:
        word = take()
        if word == "NOT":
            inner = parse_unary()
            return lambda u: not inner(u)
        if word == "(":
            inner = parse_or()
            if take() != ")":
                raise _query_error("missing )")
            return inner
        field_name, colon, raw = word.partition(":")
        if not colon or not field_name:
            raise _query_error(f"expected field:value, got {word!r}")
        if not raw:
            raw = take()
        return _term(field_name, raw)

    matcher = parse_or()
    if position != len(tokens):
        raise _query_error(f"unexpected {tokens[position]!r}")
    return matcher


def _term(field_name: str, raw: str) -> Matcher:
    searchable = field_name in SEARCHABLE or field_name.startswith(
        ("user_metadata.", "app_metadata.")
    )
    if not searchable:
        raise _query_error(f"field {field_name!r} is not searchable")
    quoted = raw.startswith('"')
    value = raw[1:-1].replace('\\"', '"') if quoted else raw.replace("\\", "")
    prefix = not quoted and value.endswith("*")
    if prefix:
        value = value[:-1]
    fold = field_name == "email"

    def matches(user: dict[str, Any]) -> bool:
        actual = _lookup(user, field_name)
        if actual is None:
            return False
        text = str(actual).lower() if isinstance(actual, bool) else str(actual)
        wanted = value
        if fold:
            text, wanted = text.lower(), wanted.lower()
        return text.startswith(wanted) if prefix else text == wanted

    return matches
