"""The app factory every endpoint is built with: lifespan, middleware, error handlers, /healthz."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from userapi import __version__
from userapi.platform import telemetry
from userapi.platform.settings import Settings
from userapi.web.dependencies import document
from userapi.web.direct_routes import DirectGet, DirectRoutes
from userapi.web.error_rendering import install_error_handlers
from userapi.web.middleware import MAX_BODY_BYTES, RequestMiddleware
from userapi.web.resources import Resources

log = logging.getLogger("userapi.app")


class _App(FastAPI):
    """FastAPI, with the requests of its direct routes (web/direct_routes.py) answered before
    its own middleware: per cached read, the layers in front of RequestMiddleware (Starlette's
    500 handler, FastAPI's exception telemetry and body limit) did nothing but add a call and
    wrap `send`, since RequestMiddleware answers every error and bounds the body itself."""

    # The direct routes, and the app that serves them: RequestMiddleware around them.
    direct: tuple[DirectRoutes, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.direct is not None and self.direct[0].match(scope):
            scope["app"] = self  # as Starlette sets it: Request.app, its state
            await self.direct[1](scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    name: str,
    routers: Sequence[APIRouter],
    settings: Settings,
    *,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
    direct: Sequence[DirectGet] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    database: bool = True,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        telemetry.configure(settings, name)
        app.state.resources = Resources.create(settings)
        # Beside serving, not before it: a pod listens as soon as it can, and its first
        # request finds the connection open, or waits for it as it would have.
        warming = asyncio.create_task(app.state.resources.warm(database=database))
        # Everything imported so far lives as long as the process. Frozen, the garbage
        # collector stops re-scanning it: under load each full collection stalled every
        # request in flight for about 45 ms while finding nothing to free.
        gc.freeze()
        log.info("ready", extra={"endpoint": name, "version": __version__})
        telemetry.ready()
        try:
            yield
        finally:
            warming.cancel()  # a database still refusing, at shutdown: nothing to wait for
            await asyncio.wait([warming])
            await app.state.resources.close()
            # The last spans and metrics go out before the process ends (Knative sends
            # SIGTERM after draining): a blocking flush, so on a thread.
            await asyncio.to_thread(telemetry.shutdown)
            log.info("stopped", extra={"endpoint": name})

    app = _App(
        title=f"userapi: {name}",
        version=__version__,
        lifespan=lifespan,
        # A deployed endpoint hands out no map of the API; `userapi dev` turns them on, and
        # docs/openapi.json is rendered from the code (commands/openapi.py) either way.
        docs_url="/docs" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry looks up three global providers (reading os.environ)
        # on every request, about 3% of a cached read, and would name spans its own way:
        # platform/telemetry.py traces at userapi's seams instead (docs/observability.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, endpoint=name, max_body_bytes=max_body_bytes)
    if direct:
        # Inside RequestMiddleware too: direct answers get the request id and the log line.
        routes = DirectRoutes(tuple(direct))
        app.direct = (routes, RequestMiddleware(routes, name, max_body_bytes))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document(FastAPI.openapi(app), routers, settings.api_host)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        # Readiness only: the process serves. Auth0, Redis and the database are deliberately
        # not checked, or a dependency outage would take every pod out of the load balancer.
        return {"status": "ok"}

    for router in routers:
        app.include_router(router)
    for path, sub_app in mounts:
        app.mount(path, sub_app)
    return app
