"""GET /api/v2/users: the Lucene subset, paging, totals, sort, fields and the 1000-record limit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from userapi.emulator import Emulator
from userapi.emulator.errors import ManagementError
from userapi.emulator.query import parse_query

from tests.support.emulator import ADA, ALAN, GRACE

pytestmark = pytest.mark.anyio

KATHERINE = "auth0|64f1c2a9e4b0a1b2c3d4e5f8"
LINUS = "samlp|acme-corp|linus@acme.example"
EVERYONE = {ADA, GRACE, ALAN, KATHERINE, LINUS}


async def search(http: httpx.AsyncClient, admin: dict[str, str], **params: Any) -> httpx.Response:
    return await http.get("/api/v2/users", params=params, headers=admin)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('email:"ada@example.com"', {ADA}),
        ("email:ADA@EXAMPLE.COM", {ADA}),  # normalized fields ignore case
        ("user_id:auth0|64f1c2a9e4b0a1b2c3d4e5f6", {ADA}),
        ('user_id:"google-oauth2|103547991597142817347"', {ALAN}),
        ('name:"Grace Hopper"', {GRACE}),
        ('name:"grace hopper"', {GRACE}),
        ("given_name:Ada", {ADA}),
        ("family_name:turing", {ALAN}),
        ("nickname:linus", {LINUS}),
        ("name:Gr*", {GRACE}),
        ("email:*example.com", {ADA, GRACE, KATHERINE}),
        ("email:*@acme.example", {LINUS}),
        ("email.domain:gmail.com", {ALAN}),
        ("email_verified:false", {KATHERINE}),
        ("email_verified:true", EVERYONE - {KATHERINE}),
        ("user_metadata.theme:dark", {ADA}),
        ("user_metadata.theme:Dark", set()),  # metadata is case-sensitive
        ("user_metadata.newsletter:true", {KATHERINE}),
        ("app_metadata.plan:pro", {ADA}),
        ("app_metadata.roles:admin", {GRACE}),  # arrays match any element
        ("app_metadata.org:*", {LINUS}),
        ("identities.connection:google-oauth2", {ALAN}),
        ("logins_count:[10 TO 60]", {ADA, GRACE}),
        ("logins_count:{3 TO 12}", {LINUS}),
        ("logins_count:[50 TO *]", {ADA}),
        ("created_at:[2026-01-01 TO *]", {KATHERINE}),
        ("email_verified:true AND app_metadata.plan:pro", {ADA}),
        ("name:Ada* OR name:Grace*", {ADA, GRACE}),
        ("name:Ada* name:Grace*", {ADA, GRACE}),  # no operator: Lucene's default OR
        ("NOT email_verified:true", {KATHERINE}),
        ("-email_verified:true", {KATHERINE}),
        ("email_verified:true AND NOT user_id:auth0*", {ALAN, LINUS}),
        ("(name:Ada* OR name:Alan*) AND user_metadata.theme:dark", {ADA}),
        ("given_name:(Ada OR Grace)", {ADA, GRACE}),
        ("  ", EVERYONE),
    ],
)
async def test_queries(
    http: httpx.AsyncClient, admin: dict[str, str], q: str, expected: set[str]
) -> None:
    response = await search(http, admin, q=q, search_engine="v3")
    assert response.status_code == 200, response.text
    assert {u["user_id"] for u in response.json()} == expected


@pytest.mark.parametrize(
    "q",
    [
        "email:(",
        "(email:a@b.c",
        "email:a@b.c)",
        "password:x",  # not a searchable field
        "justaword",
        'name:"unterminated',
        "AND name:x",
        "name:x AND",
        "name:",
        ":value",
        "name:*a",  # a leading wildcard needs 3 literal characters
        "user_metadata.theme:da*",  # no wildcards on user_metadata
        "user_metadata.count:[1 TO 2]",  # no ranges on user_metadata
        "logins_count:[1 TO]",
        "NOT",
    ],
)
async def test_unparseable_queries_are_400(
    http: httpx.AsyncClient, admin: dict[str, str], q: str
) -> None:
    response = await search(http, admin, q=q)
    assert response.status_code == 400
    body = response.json()
    assert (body["statusCode"], body["errorCode"]) == (400, "invalid_query_string")


def test_parse_query_is_usable_alone() -> None:
    matcher = parse_query('name:"Ada Lovelace" OR email:x*')
    assert matcher({"name": "ada lovelace"}) is True
    assert matcher({"email": "xavier@example.com"}) is True
    assert matcher({"name": "Bob", "email": "bob@example.com"}) is False
    with pytest.raises(ManagementError) as raised:
        parse_query("name:(")
    assert raised.value.status == 400


async def test_without_totals_the_body_is_a_bare_array(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await search(http, admin)
    assert isinstance(response.json(), list)
    assert {u["user_id"] for u in response.json()} == EVERYONE


async def test_paging_with_totals(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    pages = []
    for page in range(3):
        body = (
            await search(http, admin, page=page, per_page=2, include_totals="true", sort="email:1")
        ).json()
        assert (body["start"], body["limit"], body["total"]) == (page * 2, 2, 5)
        assert body["length"] == len(body["users"])
        pages.append([u["email"] for u in body["users"]])
    assert pages == [
        ["ada@example.com", "alan.turing@gmail.com"],
        ["grace@example.com", "katherine@example.com"],
        ["linus@acme.example"],
    ]
    past_the_end = (await search(http, admin, page=3, per_page=2, include_totals="true")).json()
    assert past_the_end["users"] == []
    assert past_the_end["total"] == 5


async def test_totals_count_matches_not_pages(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = (
        await search(http, admin, q="email_verified:true", per_page=1, include_totals="true")
    ).json()
    assert (body["length"], body["total"]) == (1, 4)


@pytest.mark.parametrize(
    ("sort", "first", "last"),
    [
        ("email:1", ADA, LINUS),
        ("email:-1", LINUS, ADA),
        ("logins_count:-1", ADA, KATHERINE),  # numbers sort as numbers: 57 > 12 > 8 > 3 > 0
        ("created_at:1", ADA, KATHERINE),
        ("last_login:1", LINUS, KATHERINE),  # users without the field come last
    ],
)
async def test_sort(
    http: httpx.AsyncClient, admin: dict[str, str], sort: str, first: str, last: str
) -> None:
    ids = [u["user_id"] for u in (await search(http, admin, sort=sort)).json()]
    assert (ids[0], ids[-1]) == (first, last)


async def test_bad_sort_is_400(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for sort in ("email", "email:2", ":1"):
        assert (await search(http, admin, sort=sort)).status_code == 400


async def test_fields(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    users = (await search(http, admin, q="user_id:auth0*", fields="user_id,email")).json()
    assert all(set(u) == {"user_id", "email"} for u in users)
    users = (await search(http, admin, fields="identities", include_fields="false")).json()
    assert all("identities" not in u and "user_id" in u for u in users)


@pytest.mark.parametrize(
    "params",
    [{"per_page": 51}, {"per_page": -1}, {"page": -1}, {"page": "x"}, {"include_totals": "1"},
     {"unknown": "x"}],
)  # fmt: skip
async def test_bad_paging_parameters_are_400(
    http: httpx.AsyncClient, admin: dict[str, str], params: dict[str, Any]
) -> None:
    response = await search(http, admin, **params)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_query_string"


@pytest.fixture
def crowded(emulator: Emulator) -> Emulator:
    """1100 users: more than Auth0 lets a search page through."""
    for number in range(1100):
        emulator.store.create({"connection": "db", "email": f"user{number:04d}@crowd.example"})
    return emulator


async def test_only_the_first_1000_results_are_reachable(
    crowded: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    last = await search(http, admin, q="email:*crowd.example", page=19, per_page=50,
                        include_totals="true", sort="email:1")  # fmt: skip
    assert last.status_code == 200
    body = last.json()
    assert body["total"] == 1100
    assert body["users"][-1]["email"] == "user0999@crowd.example"
    for page, per_page in ((20, 50), (40, 25), (34, 30)):
        beyond = await search(http, admin, page=page, per_page=per_page)
        assert beyond.status_code == 400
        assert beyond.json() == {
            "statusCode": 400,
            "error": "Bad Request",
            "message": "You can only page through the first 1000 records. See "
            "https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
            "errorCode": "invalid_paging",
        }


async def test_connection_filter(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    users = (await search(http, admin, connection="google-oauth2")).json()
    assert [u["user_id"] for u in users] == [ALAN]
