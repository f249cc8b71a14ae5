"""list-users' query check on its own: the fields a Lucene query names, however it is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from userapi.domain.user_search import DESCRIPTION, check_query
from userapi.platform.errors import APIError


@pytest.mark.parametrize(
    ("q", "fields"),
    [
        ('email:"jane@example.com"', ["email"]),
        ("name:Jan* AND -email_verified:true", ["name", "email_verified"]),
        ("(user_metadata.lang:en OR +name:x) -nickname:y",
         ["user_metadata.lang", "name", "nickname"]),
        ("created_at:[2024-01-01T00:00:00 TO *] last_login:{* TO 2025-01-01]",
         ["created_at", "last_login"]),
        ('name:"a \\" app_metadata.role:admin"', ["name"]),  # inside a phrase: a value, not a field
        ("NOT (given_name:(Ada OR Grace) AND user_id:auth0|64f1c2a9)",
         ["given_name", "user_id"]),
        ("name:O'Brien email:a+b@example.com", ["name", "email"]),
    ],
)  # fmt: skip
def test_every_field_is_found_and_nothing_else(q: str, fields: list[str]) -> None:
    assert check_query(q) == fields


@pytest.mark.parametrize(
    "q",
    [
        'email:"jane@example.com"',
        "created_at:[2024-01-01T00:00:00 TO *]",
        'updated_at:"2024-01-01T10:00:00"',
        "identities.connection:Username-Password-Authentication AND user_metadata.theme:dark",
    ],
)
def test_searchable_queries_pass(q: str) -> None:
    check_query(q)


@pytest.mark.parametrize(
    "q",
    [
        "email:x +app_metadata.role:admin",
        "email:x !app_metadata.role:admin",
        "email:x AND app\\_metadata.role:admin",
        "email:x&&app_metadata.role:admin",
        "updated_at:2024-01-01T10:00:00",  # an unquoted colon in a value
        # What the old scan let through (issue 26): a bracket hid the rest of the query.
        "created_at:[[a TO b] OR app_metadata.secret:s*",
        "created_at:{{a TO b} OR app_metadata.secret:s*",
        "name:a[b OR app_metadata.secret:s* OR name:c]",
        # Escapes, regular expressions, quotes glued to a term, _exists_, nested fields.
        "name\\:x OR app_metadata.secret:s*",
        "name:/x/ OR email:y",
        'name:(a"b "app_metadata.secret:s* "" c)',
        "_exists_:app_metadata.secret",
        "*:s3cret",
        "user_metadata.*:x",
        "name:(x OR email:y)",
        "name:a:b",
        # Terms without a field: Auth0 matches them against root fields this API hides.
        "127.0.0.1",
        '"jane doe"',
        "name:x OR [a TO b]",
        # Operators this API does not pass on.
        "name:jon~",
        'name:"a b"~2',
        "name:x^2",
        "created_at:>2024-01-01",
        "name:x || email:y",
        'created_at:["a\\\\" TO b]',
        "",
        "name:",
        "name:(x",
        "email:" + "x" * 600,
    ],
)
def test_hidden_or_unknown_fields_and_other_syntax_are_400(q: str) -> None:
    with pytest.raises(APIError) as raised:
        check_query(q)
    assert raised.value.status == 400
    assert raised.value.message.startswith("q: ")
    assert len(raised.value.message) < 400  # names the problem, never echoes a long query


def test_the_parser_is_loaded_on_the_first_query_and_writes_nothing() -> None:
    """list-users imports no parser until a query comes, and the parser only reads its tables
    (the root filesystem is read-only in the pod): a write or a warning fails the run."""
    code = textwrap.dedent(
        """
        import builtins, io, os, sys
        import userapi.endpoints.list_users
        assert not any(m == "luqum" or m.startswith(("luqum.", "ply")) for m in sys.modules)
        real_open, real_os_open = builtins.open, os.open

        def read_only(file, mode="r", *args, **kwargs):
            assert not set(mode) & set("wax+"), f"opened {file} for writing"
            return real_open(file, mode, *args, **kwargs)

        def os_read_only(path, flags, *args, **kwargs):
            assert not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT), f"opened {path}"
            return real_os_open(path, flags, *args, **kwargs)

        builtins.open = io.open = read_only
        os.open = os_read_only
        from userapi.domain.user_search import check_query
        assert check_query("name:x AND created_at:[2024-01-01 TO *]") == ["name", "created_at"]
        assert "luqum.parser" in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-B", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # ply warns there when it has to rebuild its tables


def test_the_openapi_description_says_what_q_accepts() -> None:
    assert "user_metadata.<key>" in DESCRIPTION
    assert "terms without a field" in DESCRIPTION
