"""Routes under /__emulator/: development and test tooling that Auth0 does NOT have.

No authentication: the emulator is never exposed beyond a developer machine or a test run.

- GET    /__emulator/stats        {"requests": {"<route name>": count, ...}, "management_calls":
                                  [[arrival UNIX time, route name, status], ...] (the latest)}
- POST   /__emulator/reset        zero the counters, clear faults, refill the rate-limit bucket,
                                  restore the configured RBAC setting
- PUT    /__emulator/rbac         {"enabled": false}: the API's "Enable RBAC" (with "Add
                                  Permissions in the Access Token") for the password grant
- PUT    /__emulator/latency      {"latency_ms": 500}: added to every Management API request
- PUT    /__emulator/rate-limit   {"burst": 2, "per_second": 2}: a new, full bucket
- GET    /__emulator/faults       the faults still armed
- POST   /__emulator/faults       {"route": "<route name>" | "*", "kind": "status" | "hang",
                                  "status": 503, "times": 3 | null, "headers": {}, "body": {}}
- DELETE /__emulator/faults       clear them
- POST   /__emulator/rotate-keys  a new signing key; the previous one stays in the JWKS
- POST   /__emulator/tokens       {"sub", "permissions", "audience", "expires_in", "scope",
                                  "claims"} -> {"access_token"}: a user access token
- POST   /__emulator/sign         {"claims": {...}, "headers": {...}} -> {"token"}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from userapi.emulator.limits import FAULT_KINDS

if TYPE_CHECKING:
    from userapi.emulator.app import Emulator


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    pass


async def _object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise _BadRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _get(body: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    # bool is an int subclass: `true` must not pass as a status code or a latency.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _BadRequest(f"{name} has the wrong type")
    return value


def routes(emulator: Emulator) -> list[Route]:
    async def stats(_: Request) -> Response:
        calls = [list(call) for call in emulator.management_log]
        return JSONResponse({"requests": emulator.stats(), "management_calls": calls})

    async def reset(_: Request) -> Response:
        emulator.reset()
        return JSONResponse({"ok": True})

    async def latency(request: Request) -> Response:
        body = await _object(request)
        value = _get(body, "latency_ms", (int, float), None)
        if value is None or value < 0:
            raise _BadRequest("latency_ms must be a number >= 0")
        emulator.latency_ms = float(value)
        return JSONResponse({"latency_ms": emulator.latency_ms})

    async def rate_limit(request: Request) -> Response:
        body = await _object(request)
        burst = _get(body, "burst", (int,), emulator.bucket.burst)
        per_second = _get(body, "per_second", (int, float), emulator.bucket.per_second)
        try:
            emulator.set_rate_limit(burst, float(per_second))
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        return JSONResponse({"burst": burst, "per_second": float(per_second)})

    async def rbac(request: Request) -> Response:
        enabled = _get(await _object(request), "enabled", (bool,), None)
        if enabled is None:
            raise _BadRequest("enabled must be true or false")
        emulator.rbac = enabled
        return JSONResponse({"enabled": emulator.rbac})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            emulator.clear_faults()
            return JSONResponse({"ok": True})
        if request.method == "GET":
            return JSONResponse({"faults": [asdict(f) for f in emulator.faults.active()]})
        body = await _object(request)
        kind = _get(body, "kind", (str,), "status")
        if kind not in FAULT_KINDS:
            raise _BadRequest(f"kind must be one of {', '.join(FAULT_KINDS)}")
        headers = _get(body, "headers", (dict,), None) or {}
        try:
            fault = emulator.add_fault(
                _get(body, "route", (str,), "*"),
                kind=kind,
                status=_get(body, "status", (int,), 503),
                times=_get(body, "times", (int,), None),
                headers={str(k).lower(): str(v) for k, v in headers.items()},
                body=body.get("body"),
            )
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        return JSONResponse({"fault": asdict(fault)})

    async def rotate_keys(_: Request) -> Response:
        emulator.rotate_keys()
        return JSONResponse({"kid": emulator.keys.current.kid, "kids": emulator.keys.kids})

    async def tokens(request: Request) -> Response:
        body = await _object(request)
        sub = _get(body, "sub", (str,), None)
        if not sub:
            raise _BadRequest("sub is required")
        token = emulator.mint_access_token(
            sub,
            audience=_get(body, "audience", (str,), None),
            permissions=[str(p) for p in _get(body, "permissions", (list,), None) or []],
            scope=_get(body, "scope", (str,), None),
            expires_in=_get(body, "expires_in", (int,), None),
            extra_claims=_get(body, "claims", (dict,), None),
        )
        return JSONResponse({"access_token": token})

    async def sign(request: Request) -> Response:
        body = await _object(request)
        claims = _get(body, "claims", (dict,), None)
        if claims is None:
            raise _BadRequest("claims is required")
        headers = _get(body, "headers", (dict,), None)
        try:
            token = emulator.sign(claims, headers=headers or None)
        except (jwt.PyJWTError, TypeError, ValueError, NotImplementedError) as exc:
            raise _BadRequest(f"cannot sign: {exc}") from exc
        return JSONResponse({"token": token})

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except _BadRequest as exc:
                return JSONResponse({"error": "bad_request", "message": str(exc)}, 400)
            return response

        return endpoint

    return [
        Route("/__emulator/stats", guarded(stats)),
        Route("/__emulator/reset", guarded(reset), methods=["POST"]),
        Route("/__emulator/latency", guarded(latency), methods=["PUT"]),
        Route("/__emulator/rate-limit", guarded(rate_limit), methods=["PUT"]),
        Route("/__emulator/rbac", guarded(rbac), methods=["PUT"]),
        Route("/__emulator/faults", guarded(faults), methods=["GET", "POST", "DELETE"]),
        Route("/__emulator/rotate-keys", guarded(rotate_keys), methods=["POST"]),
        Route("/__emulator/tokens", guarded(tokens), methods=["POST"]),
        Route("/__emulator/sign", guarded(sign), methods=["POST"]),
    ]
