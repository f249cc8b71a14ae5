"""The Auth0 emulator as a process (`userapi emulator`) and a client for it: Auth0's own API plus
the emulator's /__emulator control routes (tokens, faults, latency, request counts)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID, DEV_CLIENT_SECRET

from harness.processes import HOST, USERAPI, ServiceProcess, free_port


def now_iso() -> str:
    """Now as Auth0 writes times: an event older than EVENT_DEDUPE_SECONDS is ignored."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloud_event(kind: str, user: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What an Auth0 Event Stream delivers about `user` (with `changes` made to it): a CloudEvent
    with a fresh id, of type `kind` (user.created, user.updated, user.deleted), sent now."""
    return {
        "id": "evt_" + secrets.token_hex(8),
        "source": "urn:auth0:tenant",
        "specversion": "1.0",
        "type": kind,
        "time": now_iso(),
        "data": {"object": {**user, **changes}},
    }


class EmulatorHandle:
    """Talks to a running emulator; `close()` also stops it when `start_emulator` started it."""

    def __init__(
        self, base_url: str, process: ServiceProcess | None = None, public_url: str | None = None
    ) -> None:
        self.base_url = base_url
        self.process = process
        # The emulator's --base-url when clients reach it elsewhere than `base_url` (a pod sees
        # the host as 10.0.2.2): its issuer and the Management API audience derive from it.
        self.public_url = public_url or base_url
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self._management_token: str | None = None

    def close(self) -> None:
        self.http.close()
        if self.process is not None:
            self.process.terminate()

    def stats(self) -> dict[str, int]:
        return dict(self.http.get("/__emulator/stats").json()["requests"])

    def management_calls(self) -> list[tuple[float, str, int]]:
        """(arrival UNIX time, route, status) of the latest Management API requests."""
        calls = self.http.get("/__emulator/stats").json()["management_calls"]
        return [(float(at), str(route), int(status)) for at, route, status in calls]

    def calls(self, route: str) -> int:
        return self.stats().get(route, 0)

    def reset(self) -> None:
        self.http.post("/__emulator/reset").raise_for_status()

    def fault(self, route: str, **fault: Any) -> None:
        self.http.post("/__emulator/faults", json={"route": route, **fault}).raise_for_status()

    def latency(self, ms: float) -> None:
        self.http.put("/__emulator/latency", json={"latency_ms": ms}).raise_for_status()

    def rate_limit(self, burst: int, per_second: float) -> None:
        self.http.put(
            "/__emulator/rate-limit", json={"burst": burst, "per_second": per_second}
        ).raise_for_status()

    def rbac(self, enabled: bool) -> None:
        """The API's "Enable RBAC" setting (with "Add Permissions in the Access Token")."""
        self.http.put("/__emulator/rbac", json={"enabled": enabled}).raise_for_status()

    def login(self, username: str, password: str, scope: str) -> str:
        """A user's access token for the API from the password grant, as a login gets it."""
        return self._grant(
            {"grant_type": "password", "username": username, "password": password, "scope": scope}
        )

    def app_token(self, scope: str = "") -> str:
        """The dev client's machine-to-machine token for the API (client-credentials grant)."""
        return self._grant({"grant_type": "client_credentials", "scope": scope})

    def _grant(self, form: dict[str, str]) -> str:
        credentials = {"client_id": DEV_CLIENT_ID, "client_secret": DEV_CLIENT_SECRET}
        response = self.http.post(
            "/oauth/token", data={**form, **credentials, "audience": DEV_AUDIENCE}
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def token(self, sub: str, permissions: list[str] | None = None, **extra: Any) -> str:
        body = {"sub": sub, "permissions": permissions or [], "audience": DEV_AUDIENCE, **extra}
        response = self.http.post("/__emulator/tokens", json=body)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        response = self.http.post(
            "/__emulator/sign", json={"claims": claims, "headers": headers or {}}
        )
        response.raise_for_status()
        return str(response.json()["token"])

    def management_token(self) -> str:
        if self._management_token is None:
            response = self.http.post(
                "/oauth/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": DEV_CLIENT_ID,
                    "client_secret": DEV_CLIENT_SECRET,
                    "audience": f"{self.public_url}/api/v2/",
                },
            )
            response.raise_for_status()
            self._management_token = str(response.json()["access_token"])
        return self._management_token

    def update_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """A change made outside this API (the dashboard, an Action, another app)."""
        response = self.http.patch(
            "/api/v2/users/" + quote(user_id, safe=""),
            headers={"Authorization": f"Bearer {self.management_token()}"},
            json=fields,
        )
        response.raise_for_status()
        return dict(response.json())

    def delete_user(self, user_id: str) -> None:
        response = self.http.delete(
            "/api/v2/users/" + quote(user_id, safe=""),
            headers={"Authorization": f"Bearer {self.management_token()}"},
        )
        response.raise_for_status()

    def create_user(self, email: str, **fields: Any) -> dict[str, Any]:
        response = self.http.post(
            "/api/v2/users",
            headers={"Authorization": f"Bearer {self.management_token()}"},
            json={
                "connection": "Username-Password-Authentication",
                "email": email,
                "password": "Pa55word!x",
                **fields,
            },
        )
        response.raise_for_status()
        return dict(response.json())


def start_emulator(timeout: float = 30) -> EmulatorHandle:
    """`userapi emulator` on a free port, answering once this returns."""
    port = free_port()
    process = ServiceProcess([USERAPI, "emulator", "--port", str(port)], env={})
    base_url = f"http://{HOST}:{port}"
    try:
        process.wait_healthy(f"{base_url}/.well-known/jwks.json", timeout)
    except BaseException:
        process.terminate()
        raise
    return EmulatorHandle(base_url, process)
