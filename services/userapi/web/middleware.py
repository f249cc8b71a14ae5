"""Request id and the per-request log line, as plain ASGI (BaseHTTPMiddleware costs a task each)."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from userapi.platform import context, logs, telemetry
from userapi.web.error_rendering import error_response

log = logging.getLogger("userapi.request")

# A request body larger than this is refused with a 413 before it is read whole: a pod's
# memory limit must not depend on what a client chooses to send. Auth0's user fields stay far
# below it (metadata is capped at 16 KB); an endpoint may declare more (Endpoint.max_body_bytes).
MAX_BODY_BYTES = 1024 * 1024

# A caller's id is reused only when it cannot smuggle anything into logs or headers.
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _read_headers(scope: Scope) -> tuple[str | None, int | None, bool]:
    """In one pass: the caller's request id when it is sane, the declared Content-Length, and
    whether the body comes chunked."""
    request_id: str | None = None
    seen_id, length, chunked = False, None, False
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and not seen_id:
            seen_id = True
            request_id = value.decode("ascii") if _SANE_REQUEST_ID.match(value) else None
        elif name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return request_id, length, chunked


def _too_large(limit: int) -> str:
    return f"The request body may be at most {limit} bytes."


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, failing with a 413 as soon as the body passes `limit` bytes: a chunked upload
    has no Content-Length to refuse up front, and must not be buffered whole first."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI re-raises an HTTPException from the body; the handlers render JSON.
                raise HTTPException(413, _too_large(limit))
        return message

    return receive_within_limit


class RequestMiddleware:
    """Request id, the log line, and the body size limit.

    The limit is here rather than in Starlette's RequestBodyLimitMiddleware, which FastAPI
    places outside every user middleware: its 413 is plain text, without a request id, and
    reaches this middleware as an exception."""

    def __init__(self, app: ASGIApp, endpoint: str, max_body_bytes: int) -> None:
        self.app = app
        self.endpoint = endpoint
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, declared, chunked = _read_headers(scope)
        server_id = secrets.token_hex(16)
        ctx = context.RequestContext(request_id or server_id, server_id)
        token = context.bind(ctx)
        path = scope.get("path", "")
        # Probes every 50 ms are neither traced nor logged: they would drown both.
        traced = telemetry.request(scope) if path != "/healthz" else telemetry.OFF
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
            limit = self.max_body_bytes
            if declared is not None and declared > limit:
                await error_response(413, "payload_too_large", _too_large(limit))(
                    scope, receive, send_with_id
                )
            else:
                # The server delivers no more than a Content-Length declares: only a chunked
                # body needs counting (and a GET, with neither, costs nothing here).
                body_receive = _limited(receive, limit) if chunked else receive
                await self.app(scope, body_receive, send_with_id)
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
            if path != "/healthz":
                duration_ms = round((time.perf_counter() - started) * 1000, 2)
                logs.request(self.endpoint, scope["method"], path, status, duration_ms, ctx)
            # After the log line, which carries the trace and span ids while the span is open.
            route = scope.get("route")
            traced.end(status, getattr(route, "path", None), ctx.auth0_ms / 1000)
            context.reset(token)
