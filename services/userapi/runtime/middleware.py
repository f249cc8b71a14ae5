"""Request id and the per-request log line, as plain ASGI (BaseHTTPMiddleware costs a task each)."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from userapi.runtime import context
from userapi.runtime.errors import error_response

log = logging.getLogger("userapi.request")

# A caller's id is reused only when it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return value.decode("ascii") if _SANE_REQUEST_ID.match(value) else None
    return None


class RequestMiddleware:
    def __init__(self, app: ASGIApp, endpoint: str) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context.RequestContext(_incoming_request_id(scope) or secrets.token_hex(16))
        token = context.bind(ctx)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", ctx.request_id.encode("ascii"))

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Here, not in an exception handler: Starlette runs those outside this middleware,
            # where the request id is gone. The traceback goes to the log, never to the caller.
            log.exception("unhandled error", extra={"endpoint": self.endpoint})
            if status_sent:
                raise
            await error_response(500, "internal_error", "Internal error.")(
                scope, receive, send_with_id
            )
        finally:
            path = scope.get("path", "")
            if path != "/healthz":  # probes every 50 ms would drown the log
                log.info(
                    "request",
                    extra={
                        "endpoint": self.endpoint,
                        "method": scope.get("method"),
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "cache": ctx.cache,
                        "auth0_ms": round(ctx.auth0_ms, 2),
                        "auth0_calls": ctx.auth0_calls,
                        "subject": ctx.subject,
                    },
                )
            context.reset(token)
