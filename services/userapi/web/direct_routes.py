"""A GET route answered without FastAPI's per-request dependency solving.

FastAPI resolves an endpoint's parameters generically on every request: for get-user's five
(path, header, two dependencies, the response) that cost about 300 µs of CPU per cached read,
a third of it, measured under load (docs/performance.md). A `DirectGet` answers its one
route from plain ASGI instead: it calls the same dependency functions and the same endpoint
function that FastAPI would, and renders errors with the same handlers. The FastAPI route
stays declared, so OpenAPI is still generated from the endpoint's signature; requests this
fast path does not take (other methods, other paths) go on to FastAPI unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from userapi.platform.errors import APIError, UpstreamError
from userapi.web.error_rendering import render_error

# Given the request and the path's one parameter, the response.
DirectHandler = Callable[[Request, str], Awaitable[Response]]


@dataclass(frozen=True)
class DirectGet:
    """`GET <prefix>{parameter}`: `path` is the FastAPI route's, e.g. "/users/{user_id}"."""

    path: str
    handler: DirectHandler

    @cached_property
    def prefix(self) -> str:
        return self.path[: self.path.index("{")]

    @cached_property
    def parameter_name(self) -> str:
        return self.path[self.path.index("{") + 1 : self.path.index("}")]


class DirectRoutes:
    """The ASGI app answering the `DirectGet` routes; `match` picks the requests it answers.

    The app calls it (web/app.py) inside RequestMiddleware and outside everything else:
    Starlette's 500 handler and FastAPI's body limit would add two layers per request, and for
    a GET RequestMiddleware already renders every error and bounds the body."""

    def __init__(self, routes: tuple[DirectGet, ...]) -> None:
        self.routes = routes

    def match(self, scope: Scope) -> bool:
        """Whether one of the routes answers this request: then the scope names the route and
        its parameter, as Starlette's router would (`route.path` is the template telemetry
        reports as http.route)."""
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            for route in self.routes:
                if path.startswith(route.prefix):
                    parameter = path[len(route.prefix) :]
                    if parameter and "/" not in parameter:
                        scope["route"] = route
                        scope["path_params"] = {route.parameter_name: parameter}
                        return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: DirectGet = scope["route"]
        request = Request(scope, receive, send)
        try:
            response = await route.handler(request, scope["path_params"][route.parameter_name])
        except (APIError, UpstreamError) as exc:
            response = render_error(exc)
        await response(scope, receive, send)
