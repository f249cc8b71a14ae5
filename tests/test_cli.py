"""The commands read their defaults through Settings, and an explicit option wins."""

from __future__ import annotations

from typing import Any

import pytest
import userapi.emulator
import userapi.platform.startup
from userapi.commands import cli


def test_the_emulator_command_takes_its_defaults_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        userapi.emulator, "run", lambda host, port, **kw: calls.append({"port": port, **kw})
    )
    monkeypatch.setenv("EMULATOR_PORT", "9911")
    monkeypatch.setenv("EMULATOR_LATENCY_MS", "250")
    monkeypatch.setenv("EMULATOR_BASE_URL", "http://auth0.test")
    cli.main(["emulator"])
    cli.main(["emulator", "--port", "9912", "--latency-ms", "0"])
    assert [(c["port"], c["latency_ms"], c["base_url"]) for c in calls] == [
        (9911, 250.0, "http://auth0.test"),
        (9912, 0.0, "http://auth0.test"),
    ]


def test_serve_listens_on_port_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    ports: list[int] = []
    monkeypatch.setattr(
        userapi.platform.startup,
        "run_uvicorn",
        lambda app, host, port, settings: ports.append(port),
    )
    for name, value in {
        "AUTH0_DOMAIN": "example.us.auth0.com",
        "AUTH0_AUDIENCE": "https://api.example.com",
        "AUTH0_CLIENT_ID": "client",
        "AUTH0_CLIENT_SECRET": "s",
        "PORT": "9300",
    }.items():
        monkeypatch.setenv(name, value)
    cli.main(["serve", "get-user"])
    cli.main(["serve", "get-user", "--port", "9301"])
    assert ports == [9300, 9301]


def test_serving_without_auth0_exits_with_the_missing_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AUTH0_DOMAIN", "AUTH0_AUDIENCE", "AUTH0_CLIENT_ID", "AUTH0_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit, match="configuration error: missing settings: AUTH0_DOMAIN"):
        cli.main(["serve", "get-user"])
