"""`userapi` command line: serve one endpoint, run everything locally, migrate, run the emulator.

Each command imports only what it uses: `serve get-user` must not pay for the emulator, the
other endpoints or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def serve(endpoint: str, host: str, port: int | None) -> None:
    from userapi import endpoints
    from userapi.platform.startup import run_uvicorn, startup

    try:
        declared = endpoints.load(endpoint)
    except ValueError as exc:
        raise SystemExit(f"userapi: {exc}") from None
    settings = startup(management_api=declared.management_api)
    app = endpoints.build_app(endpoint, [endpoint], settings)
    run_uvicorn(app, host, settings.port if port is None else port, settings)


def migrate() -> None:
    import asyncio

    from userapi.adapters.database import create_database
    from userapi.adapters.migrate import apply_migrations
    from userapi.platform.startup import startup

    settings = startup(serving=False)

    async def run() -> list[str]:
        database = create_database(settings)
        try:
            return await apply_migrations(database)
        finally:
            await database.close()

    applied = asyncio.run(run())
    target = "PostgreSQL" if settings.database_url else f"SQLite {settings.sqlite_path}"
    print(f"userapi: {target}: applied {', '.join(applied) if applied else 'nothing (up to date)'}")


def emulator(
    host: str, port: int | None, seed: str | None, latency_ms: float | None, base_url: str | None
) -> None:
    from userapi.emulator import run
    from userapi.platform.startup import load_settings

    settings = load_settings()
    run(
        host,
        settings.emulator_port if port is None else port,
        seed_path=seed or settings.emulator_seed,
        latency_ms=settings.emulator_latency_ms if latency_ms is None else latency_ms,
        base_url=base_url or settings.emulator_base_url,
    )


def openapi(output: str | None, host: str) -> None:
    from userapi.commands.openapi import render

    text = render(host)
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)


def cluster(args: argparse.Namespace) -> None:
    try:
        from userapi.commands.cluster_status import Cluster, format_status
    except ImportError:
        raise SystemExit(
            "userapi: install the cluster extra: pip install 'userapi[cluster]'"
        ) from None
    target = Cluster(args.namespace, args.kubeconfig)
    if args.action == "status":
        print(format_status(target.status()))
    elif args.action == "urls":
        for row in target.status():
            print(f"{row.name}\t{row.url or '-'}")
    else:
        try:
            result = target.coldstart(
                args.endpoint, path=args.path, token=args.token, idle_timeout=args.idle_timeout
            )
        except (LookupError, TimeoutError) as error:  # no such endpoint, or it never idled
            raise SystemExit(f"userapi: {error}") from None
        ready = f"{result.pod_ready_seconds:.2f}s" if result.pod_ready_seconds is not None else "?"
        print(
            f"{result.endpoint}: first response {result.first_response_seconds:.2f}s "
            f"(HTTP {result.status}), pod created->ready {ready}"
        )


def dev(host: str, port: int | None) -> None:
    from userapi.commands.dev import run

    run(host, port)


def reload(host: str, port: int | None, watch: str | None) -> None:
    import os
    from pathlib import Path

    import userapi
    from userapi.commands.reload import run

    # Not through Settings: the reloading parent imports none of userapi's modules.
    port = int(os.environ.get("PORT", "8080")) if port is None else port
    run(host, port, Path(watch or Path(userapi.__file__).parent))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="userapi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="serve one endpoint (the container entrypoint)")
    p.add_argument("endpoint", help="get-user, list-users, …")
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container must listen on all
    p.add_argument("--port", type=int, default=None, help="default: $PORT, else 8080")

    p = commands.add_parser("dev", help="every endpoint and the Auth0 emulator on one local port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $USERAPI_DEV_PORT, else 8000")

    p = commands.add_parser("reload", help="serve $USERAPI_ENDPOINT, reloaded on every edit "
                            "(the skaffold dev image's entrypoint)")  # fmt: skip
    p.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a container must listen on all
    p.add_argument("--port", type=int, default=None, help="default: $PORT, else 8080")
    p.add_argument("--watch", default=None, help="default: the installed userapi package")

    commands.add_parser("migrate", help="create or upgrade the schema at DATABASE_URL")

    p = commands.add_parser("openapi", help="print the merged OpenAPI document of every endpoint")
    p.add_argument("--output", help="write it to this file instead of stdout")
    p.add_argument("--host", default="", help="the one API host (chart value api.host): the "
                   "document's server is then https://HOST")  # fmt: skip

    p = commands.add_parser("cluster", help="the endpoints' Knative Services in a cluster")
    p.add_argument("action", choices=["status", "urls", "coldstart"])
    p.add_argument("endpoint", nargs="?", help="for coldstart")
    p.add_argument("-n", "--namespace", default="userapi")
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--path", default="/healthz", help="coldstart: the path to request")
    p.add_argument("--token", default=None, help="coldstart: a bearer token for the request")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="coldstart: how long to wait for the endpoint to scale to zero",
    )

    p = commands.add_parser("emulator", help="run the Auth0 emulator (development and tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $EMULATOR_PORT, else 8765")
    p.add_argument("--seed", default=None, help="users JSON file (default: $EMULATOR_SEED)")
    p.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="added to every Management API call (default: $EMULATOR_LATENCY_MS, else 0)",
    )
    p.add_argument("--base-url", default=None, help="default: $EMULATOR_BASE_URL")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        serve(args.endpoint, args.host, args.port)
    elif args.command == "dev":
        dev(args.host, args.port)
    elif args.command == "reload":
        reload(args.host, args.port, args.watch)
    elif args.command == "migrate":
        migrate()
    elif args.command == "openapi":
        openapi(args.output, args.host)
    elif args.command == "cluster":
        if args.action == "coldstart" and not args.endpoint:
            raise SystemExit("userapi: cluster coldstart needs an ENDPOINT")
        cluster(args)
    elif args.command == "emulator":
        emulator(args.host, args.port, args.seed, args.latency_ms, args.base_url)


if __name__ == "__main__":
    main(sys.argv[1:])
