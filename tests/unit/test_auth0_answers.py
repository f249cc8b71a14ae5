"""What the Management API client makes of answers it cannot use: an Auth0Error (502), never a
500, whatever the body holds."""

from __future__ import annotations

import httpx
import pytest
from userapi.adapters.auth0_management import _json_object
from userapi.platform.errors import Auth0Error


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"user_metadata":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["not-json", "not-an-object", "nested-past-the-parser"],
)
def test_an_unusable_answer_is_an_auth0_error(content: bytes) -> None:
    with pytest.raises(Auth0Error):
        _json_object(httpx.Response(200, content=content))
