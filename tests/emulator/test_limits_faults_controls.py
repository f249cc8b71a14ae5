"""Rate limiting, injected faults, latency, request counters and the /__emulator control routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import httpx
import jwt
import pytest
from userapi.emulator import DEV_AUDIENCE, ROUTE_NAMES, Emulator, Fault

from tests.support.emulator import (
    ADA,
    BASE_URL,
    client_for,
    make_emulator,
    management_token,
    user_path,
)

pytestmark = pytest.mark.anyio

GET_USER = "GET /api/v2/users/{id}"
TOO_MANY = {
    "statusCode": 429,
    "error": "Too Many Requests",
    "message": "Global limit has been reached",
    "errorCode": "too_many_requests",
}


# Rate limits -------------------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[tuple[Emulator, httpx.AsyncClient, dict[str, str]]]:
    """A bucket of 3 that refills one token every 10 s: easy to empty, slow to refill."""
    emulator = make_emulator(rate_limit_burst=3, rate_limit_per_second=0.1)
    async with client_for(emulator) as client:
        headers = {"Authorization": f"Bearer {await management_token(client)}"}
        yield emulator, client, headers


async def test_every_management_response_carries_rate_limit_headers(
    limited: tuple[Emulator, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, http, admin = limited
    responses = [
        await http.get(user_path(ADA), headers=admin),  # 200
        await http.get(user_path("auth0|nobody"), headers=admin),  # 404
        await http.get(user_path(ADA)),  # 401
    ]
    assert [r.status_code for r in responses] == [200, 404, 401]
    assert [r.headers["x-ratelimit-limit"] for r in responses] == ["3", "3", "3"]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["2", "1", "0"]
    for response in responses:
        reset = int(response.headers["x-ratelimit-reset"])  # UNIX seconds, an integer
        assert time.time() - 1 <= reset <= time.time() + 11


async def test_an_empty_bucket_answers_429(
    limited: tuple[Emulator, httpx.AsyncClient, dict[str, str]],
) -> None:
    emulator, http, admin = limited
    statuses = [(await http.get(user_path(ADA), headers=admin)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = await http.get(user_path(ADA), headers=admin)
    assert response.status_code == 429
    assert response.json() == TOO_MANY
    assert response.headers["x-ratelimit-limit"] == "3"
    assert response.headers["x-ratelimit-remaining"] == "0"
    reset = int(response.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 11  # when the next token arrives
    assert emulator.stats()[GET_USER] == 4  # 429s are counted too
    # /oauth/token and the JWKS are not charged to the Management API bucket.
    assert (await http.get("/.well-known/jwks.json")).status_code == 200
    assert "x-ratelimit-limit" not in (await http.get("/.well-known/jwks.json")).headers


async def test_the_bucket_refills_over_time() -> None:
    emulator = make_emulator(rate_limit_burst=1, rate_limit_per_second=20.0)
    async with client_for(emulator) as http:
        admin = {"Authorization": f"Bearer {await management_token(http)}"}
        assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
        assert (await http.get(user_path(ADA), headers=admin)).status_code == 429
        await anyio.sleep(0.1)
        assert (await http.get(user_path(ADA), headers=admin)).status_code == 200


async def test_reset_refills_and_rate_limit_route_reconfigures(
    limited: tuple[Emulator, httpx.AsyncClient, dict[str, str]],
) -> None:
    _, http, admin = limited
    for _ in range(3):
        await http.get(user_path(ADA), headers=admin)
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 429
    assert (await http.post("/__emulator/reset")).status_code == 200
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
    configured = await http.put("/__emulator/rate-limit", json={"burst": 2, "per_second": 0})
    assert configured.json() == {"burst": 2, "per_second": 0.0}
    statuses = [(await http.get(user_path(ADA), headers=admin)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    bad = await http.put("/__emulator/rate-limit", json={"burst": 0})
    assert bad.status_code == 400


# Faults ------------------------------------------------------------------------------------------


async def test_status_fault_for_n_requests(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.post(
        "/__emulator/faults", json={"route": GET_USER, "kind": "status", "status": 503, "times": 2}
    )
    assert response.status_code == 200
    statuses = [(await http.get(user_path(ADA), headers=admin)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert emulator.stats()[GET_USER] == 3


async def test_fault_responses_look_like_auth0(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    emulator.add_fault(GET_USER, status=503, times=1)
    response = await http.get(user_path(ADA), headers=admin)
    assert response.json() == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": "Service Unavailable",
    }
    assert "x-ratelimit-remaining" in response.headers


async def test_fault_only_hits_its_route(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    emulator.add_fault("GET /api/v2/users", status=500, times=1)
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
    assert (await http.get("/api/v2/users", headers=admin)).status_code == 500
    assert (await http.get("/api/v2/users", headers=admin)).status_code == 200


async def test_wildcard_fault_until_cleared(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await http.post("/__emulator/faults", json={"route": "*", "status": 502, "times": None})
    for _ in range(3):
        assert (await http.get(user_path(ADA), headers=admin)).status_code == 502
    assert (await http.get("/.well-known/jwks.json")).status_code == 502
    token = await http.post("/oauth/token", data={})
    assert token.status_code == 502
    assert token.json()["error"] == "server_error"  # /oauth/token keeps the OAuth error shape
    listed = (await http.get("/__emulator/faults")).json()["faults"]
    assert [(f["route"], f["status"], f["times"]) for f in listed] == [("*", 502, None)]
    assert (await http.delete("/__emulator/faults")).status_code == 200
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
    assert (await http.get("/__emulator/faults")).json() == {"faults": []}


async def test_fault_with_custom_headers_and_body(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    fault = {
        "route": GET_USER,
        "status": 429,
        "times": 1,
        "headers": {"X-RateLimit-Reset": "12345", "Retry-After": "7"},
        "body": {"custom": True},
    }
    await http.post("/__emulator/faults", json=fault)
    response = await http.get(user_path(ADA), headers=admin)
    assert response.status_code == 429
    assert response.json() == {"custom": True}
    assert response.headers["x-ratelimit-reset"] == "12345"
    assert response.headers["retry-after"] == "7"


async def test_a_429_fault_resets_in_a_second_by_default(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    emulator.add_fault(Fault(route=GET_USER, status=429, times=1))
    response = await http.get(user_path(ADA), headers=admin)
    assert response.status_code == 429
    assert response.json() == TOO_MANY
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert 0 <= int(response.headers["x-ratelimit-reset"]) - int(time.time()) <= 1


async def test_a_429_fault_on_the_token_endpoint(http: httpx.AsyncClient) -> None:
    await http.post(
        "/__emulator/faults", json={"route": "POST /oauth/token", "status": 429, "times": 1}
    )
    response = await http.post("/oauth/token", data={})
    assert response.status_code == 429
    assert response.json()["error"] == "too_many_requests"
    assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())
    assert (await http.post("/oauth/token", data={})).status_code == 400  # back to normal


async def test_hang_fault_holds_the_request_until_the_client_gives_up(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    emulator.add_fault(GET_USER, kind="hang", times=1)
    started = time.perf_counter()
    # ASGITransport ignores httpx timeouts, so the client's deadline is a cancel scope.
    with anyio.move_on_after(0.3) as deadline:
        await http.get(user_path(ADA), headers=admin)
    assert deadline.cancelled_caught  # no answer came
    assert 0.3 <= time.perf_counter() - started < 2
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
    assert emulator.stats()[GET_USER] == 2


async def test_hang_fault_on_the_jwks(emulator: Emulator, http: httpx.AsyncClient) -> None:
    await http.post(
        "/__emulator/faults", json={"route": "GET /.well-known/jwks.json", "kind": "hang"}
    )
    with anyio.move_on_after(0.2) as deadline:
        await http.get("/.well-known/jwks.json")
    assert deadline.cancelled_caught
    emulator.clear_faults()
    assert (await http.get("/.well-known/jwks.json")).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"route": "GET /nowhere"},
        {"status": 42},
        {"status": True},
        {"times": -1},
        {"headers": "x"},
    ],
)
async def test_bad_faults_are_400(http: httpx.AsyncClient, fault: dict[str, object]) -> None:
    response = await http.post("/__emulator/faults", json=fault)
    assert response.status_code == 400
    assert (await http.get("/__emulator/faults")).json() == {"faults": []}


def test_add_fault_validates() -> None:
    emulator = make_emulator()
    with pytest.raises(ValueError, match="unknown route"):
        emulator.add_fault("GET /api/v2/roles")
    fault = emulator.add_fault(GET_USER, status=504, times=1)
    assert fault.route == GET_USER
    assert fault.status == 504


# Latency -----------------------------------------------------------------------------------------


async def test_latency_applies_to_management_requests_only(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.put("/__emulator/latency", json={"latency_ms": 200})
    assert response.json() == {"latency_ms": 200.0}
    started = time.perf_counter()
    assert (await http.get(user_path(ADA), headers=admin)).status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    await http.get("/.well-known/jwks.json")
    await management_token(http)
    assert time.perf_counter() - started < 0.2
    await http.put("/__emulator/latency", json={"latency_ms": 0})
    started = time.perf_counter()
    await http.get(user_path(ADA), headers=admin)
    assert time.perf_counter() - started < 0.2


async def test_latency_from_the_config() -> None:
    emulator = make_emulator(latency_ms=150)
    async with client_for(emulator) as http:
        admin = {"Authorization": f"Bearer {await management_token(http)}"}
        started = time.perf_counter()
        await http.get("/api/v2/users", headers=admin)
        assert time.perf_counter() - started >= 0.15


async def test_bad_latency_is_400(http: httpx.AsyncClient) -> None:
    for body in ({}, {"latency_ms": -1}, {"latency_ms": "fast"}):
        assert (await http.put("/__emulator/latency", json=body)).status_code == 400


# Counters ----------------------------------------------------------------------------------------


async def test_counters_per_route(emulator: Emulator, http: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {await management_token(http)}"}
    await http.get("/.well-known/openid-configuration")
    await http.get("/.well-known/jwks.json")
    await http.get(user_path(ADA), headers=admin)
    await http.get(user_path("auth0|nobody"), headers=admin)
    await http.get("/api/v2/users", headers=admin)
    await http.get("/api/v2/users-by-email", params={"email": "a@b.co"}, headers=admin)
    created = await http.post(
        "/api/v2/users", json={"connection": "db", "email": "c@d.co"}, headers=admin
    )
    path = user_path(created.json()["user_id"])
    await http.patch(path, json={"name": "x"}, headers=admin)
    await http.delete(path, headers=admin)
    await http.delete(path)  # 401: still counted
    expected = {
        "POST /oauth/token": 1,
        "GET /.well-known/openid-configuration": 1,
        "GET /.well-known/jwks.json": 1,
        "GET /api/v2/users/{id}": 2,
        "GET /api/v2/users": 1,
        "GET /api/v2/users-by-email": 1,
        "POST /api/v2/users": 1,
        "PATCH /api/v2/users/{id}": 1,
        "DELETE /api/v2/users/{id}": 2,
    }
    assert set(expected) == set(ROUTE_NAMES)
    assert emulator.stats() == expected
    stats = (await http.get("/__emulator/stats")).json()
    assert stats["requests"] == expected
    # Each Management API request, in order of arrival, with its status.
    assert [(route, status) for _, route, status in stats["management_calls"]] == [
        ("GET /api/v2/users/{id}", 200),
        ("GET /api/v2/users/{id}", 404),
        ("GET /api/v2/users", 200),
        ("GET /api/v2/users-by-email", 200),
        ("POST /api/v2/users", 201),
        ("PATCH /api/v2/users/{id}", 200),
        ("DELETE /api/v2/users/{id}", 204),
        ("DELETE /api/v2/users/{id}", 401),
    ]
    await http.get("/__emulator/stats")  # control routes are not counted
    assert emulator.stats() == expected
    emulator.reset_stats()
    assert emulator.stats() == {}
    assert list(emulator.management_log) == []


async def test_reset_route_zeroes_counters_and_clears_faults(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emulator.add_fault("GET /.well-known/jwks.json", status=500)
    assert (await http.get("/.well-known/jwks.json")).status_code == 500
    assert (await http.post("/__emulator/reset")).status_code == 200
    assert (await http.get("/__emulator/stats")).json() == {"requests": {}, "management_calls": []}
    assert (await http.get("/.well-known/jwks.json")).status_code == 200


# Tokens over HTTP --------------------------------------------------------------------------------


async def test_tokens_route_mints_user_tokens(emulator: Emulator, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/__emulator/tokens",
        json={"sub": ADA, "permissions": ["read:users"], "expires_in": 120,
              "claims": {"org_id": "org_1"}},
    )  # fmt: skip
    assert response.status_code == 200
    key = emulator.keys.current.private_key.public_key()
    claims = jwt.decode(
        response.json()["access_token"], key, algorithms=["RS256"], audience=DEV_AUDIENCE,
        issuer=BASE_URL + "/",
    )  # fmt: skip
    assert (claims["sub"], claims["permissions"], claims["org_id"]) == (
        ADA,
        ["read:users"],
        "org_1",
    )
    assert claims["exp"] - claims["iat"] == 120
    other = await http.post("/__emulator/tokens", json={"sub": ADA, "audience": "https://x"})
    assert jwt.decode(other.json()["access_token"], options={"verify_signature": False})["aud"][
        0
    ] == ("https://x")
    assert (await http.post("/__emulator/tokens", json={})).status_code == 400
    assert (await http.post("/__emulator/tokens", json={"sub": 5})).status_code == 400


async def test_sign_route(emulator: Emulator, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/__emulator/sign", json={"claims": {"sub": "x", "aud": "y"}, "headers": {"kid": "k1"}}
    )
    token = response.json()["token"]
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    key = emulator.keys.current.private_key.public_key()
    assert jwt.decode(token, key, algorithms=["RS256"], audience="y") == {"sub": "x", "aud": "y"}
    assert (await http.post("/__emulator/sign", json={"headers": {}})).status_code == 400
    assert (await http.post("/__emulator/sign", content=b"nope")).status_code == 400
