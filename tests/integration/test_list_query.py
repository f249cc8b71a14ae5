"""list-users' query check on its own: the fields a Lucene query names, however it is written."""

from __future__ import annotations

import pytest
from userapi.endpoints.list_users import _check_query, _fields
from userapi.platform.errors import APIError


@pytest.mark.parametrize(
    ("q", "fields"),
    [
        ('email:"jane@example.com"', ["email"]),
        ("name:Jan* AND -email_verified:true", ["name", "email_verified"]),
        ("(user_metadata.lang:en OR +name:x) !nickname:y",
         ["user_metadata.lang", "name", "nickname"]),
        ("created_at:[2024-01-01T00:00:00 TO *] last_login:{* TO 2025-01-01]",
         ["created_at", "last_login"]),
        ('name:"a \\" app_metadata.role:admin"', ["name"]),  # inside a phrase: a value, not a field
        ("email:x&&app_metadata.role:admin", ["email", "app_metadata.role"]),
    ],
)  # fmt: skip
def test_every_field_is_found_and_nothing_else(q: str, fields: list[str]) -> None:
    assert _fields(q) == fields


@pytest.mark.parametrize(
    "q",
    [
        'email:"jane@example.com"',
        "created_at:[2024-01-01T00:00:00 TO *]",
        "identities.connection:Username-Password-Authentication AND user_metadata.theme:dark",
    ],
)
def test_searchable_queries_pass(q: str) -> None:
    _check_query(q)


@pytest.mark.parametrize(
    "q",
    [
        "email:x +app_metadata.role:admin",
        "email:x !app_metadata.role:admin",
        "email:x AND app\\_metadata.role:admin",
        "updated_at:2024-01-01T10:00:00",  # an unquoted colon in a value names a field "01T10"
    ],
)
def test_hidden_or_unknown_fields_are_400(q: str) -> None:
    with pytest.raises(APIError) as raised:
        _check_query(q)
    assert raised.value.status == 400
