"""The second yardstick: Knative `func`'s Python HTTP template, served by its runtime.

This is the shape `func create -l python -t http` generates (a `new()` constructor returning an
object with an ASGI `handle`), run by the `func-python` package's `serve`, as its container does.
It listens where LISTEN_ADDRESS says (func-python's own variable).
"""

from __future__ import annotations

from typing import Any


class Function:
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [[b"content-type", b"application/json"]],
            }
        )
        await send({"type": "http.response.body", "body": b'{"hello":"world"}'})


def new() -> Function:
    return Function()


if __name__ == "__main__":
    from func_python.http import serve  # type: ignore[import-untyped]

    serve(new)
