"""The whole API as the integration tests call it: each endpoint its own `userapi serve`
process, sharing Redis and PostgreSQL through PgBouncer."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from harness.postgres import PostgresServer
from harness.userapi import Service
from tests.support import bearer

EVENTS_SECRET = "test-events-secret-0123456789"
GET_ROUTE = "GET /api/v2/users/{id}"
POST_ROUTE = "POST /api/v2/users"
ENDPOINTS = ("get-user", "list-users", "create-user", "update-user", "delete-user", "auth0-events")


class API:
    def __init__(self, services: dict[str, Service], db: str, postgres: PostgresServer) -> None:
        self.services = services
        self.db = db
        self.postgres = postgres

    def call(
        self, endpoint: str, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        return bearer.request(self.services[endpoint].http, method, path, token, **kwargs)

    def sql(self, query: str) -> list[str]:
        return self.postgres.psql(query, database=self.db).stdout.splitlines()


def post_user(api: API, admin: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.call("create-user", "POST", "/users", admin, json=body, headers=headers)


def new_user_body(**overrides: Any) -> dict[str, Any]:
    return {
        "email": f"new-{secrets.token_hex(4)}@example.com",
        "password": "Str0ng-passw0rd!",
        "name": "New Person",
        "user_metadata": {"source": "test"},
        "plan": "team",
        **overrides,
    }
