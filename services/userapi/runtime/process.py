"""Process start-up shared by `userapi serve` and `userapi dev`: settings, then uvicorn."""

from __future__ import annotations

from userapi.runtime.settings import ConfigurationError, Settings


def load_settings(**overrides: object) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"userapi: configuration error: {problems}") from None


def require_auth0(settings: Settings) -> None:
    try:
        settings.require_auth0()
    except ConfigurationError as exc:
        raise SystemExit(f"userapi: configuration error: {exc}") from None


def run_uvicorn(app: object, host: str, port: int, settings: Settings) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # logs.configure() already set JSON logging
        access_log=False,  # replaced by the request log line
        server_header=False,
        # SIGTERM: stop accepting, let in-flight requests finish for this long, then close.
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )
    uvicorn.Server(config).run()
