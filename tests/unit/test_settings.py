from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from userapi.platform.settings import ConfigurationError, Settings

REQUIRED: dict[str, Any] = {
    "auth0_domain": "example.us.auth0.com",
    "auth0_audience": "https://api.example.com",
    "auth0_client_id": "client",
}


def test_a_tenant_domain_gives_https_issuer_and_management_audience() -> None:
    settings = Settings(**REQUIRED, auth0_client_secret="s")
    assert settings.auth0_base_url == "https://example.us.auth0.com"
    assert settings.issuer == "https://example.us.auth0.com/"
    assert settings.management_audience == "https://example.us.auth0.com/api/v2/"


def test_a_base_url_is_used_as_is() -> None:
    settings = Settings(
        **{**REQUIRED, "auth0_domain": "https://login.example.com/"}, auth0_client_secret="s"
    )
    assert settings.issuer == "https://login.example.com/"
    local = Settings(
        **{**REQUIRED, "auth0_domain": "http://127.0.0.1:8765/"},
        auth0_allow_insecure_http=True,
        auth0_client_secret="s",
    )
    assert local.issuer == "http://127.0.0.1:8765/"


@pytest.mark.parametrize(
    "domain", ["http://example.us.auth0.com", "HTTP://example.us.auth0.com/", "ftp://x", "ws://x"]
)
def test_a_cleartext_auth0_domain_is_refused_without_the_local_switch(
    domain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client secret would be posted to /oauth/token in cleartext: a dev value that reaches
    # production must stop the process at start-up.
    monkeypatch.delenv("AUTH0_ALLOW_INSECURE_HTTP", raising=False)
    with pytest.raises(ValueError, match="AUTH0_DOMAIN must be a domain or an https:// URL"):
        Settings(**{**REQUIRED, "auth0_domain": domain}, auth0_client_secret="s")
    monkeypatch.setenv("AUTH0_ALLOW_INSECURE_HTTP", "true")
    if domain.lower().startswith("http://"):
        assert Settings(**{**REQUIRED, "auth0_domain": domain}).auth0_base_url.startswith("http")
    else:  # the switch allows plain http, never another scheme
        with pytest.raises(ValueError, match="AUTH0_DOMAIN"):
            Settings(**{**REQUIRED, "auth0_domain": domain})


def test_userapi_serve_refuses_an_http_auth0_domain(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "DATABASE_"))},
        "AUTH0_DOMAIN": "http://example.us.auth0.com",
        "AUTH0_AUDIENCE": "https://api.example.com",
        "AUTH0_CLIENT_ID": "client",
        "AUTH0_CLIENT_SECRET": "s",
    }
    code = "from userapi.commands.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "get-user", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "AUTH0_DOMAIN must be a domain or an https:// URL" in result.stderr


def test_the_secret_is_read_from_a_file_at_each_use(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first\n")
    settings = Settings(**REQUIRED, auth0_client_secret_file=secret)
    settings.require_auth0()
    assert settings.client_secret() == "first"
    secret.write_text("rotated")
    assert settings.client_secret() == "rotated"


def test_serving_without_auth0_settings_names_every_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AUTH0_DOMAIN", "AUTH0_AUDIENCE", "AUTH0_CLIENT_ID", "AUTH0_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as raised:
        Settings().require_auth0()
    for name in ("AUTH0_DOMAIN", "AUTH0_AUDIENCE", "AUTH0_CLIENT_ID", "AUTH0_CLIENT_SECRET"):
        assert name in str(raised.value)


def test_an_endpoint_that_never_calls_the_management_api_needs_no_client_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AUTH0_CLIENT_SECRET", "AUTH0_CLIENT_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    Settings(**REQUIRED).require_auth0(management_api=False)
    with pytest.raises(ConfigurationError, match="AUTH0_CLIENT_SECRET"):
        Settings(**REQUIRED).require_auth0()
    monkeypatch.delenv("AUTH0_DOMAIN", raising=False)
    without_domain = {k: v for k, v in REQUIRED.items() if k != "auth0_domain"}
    with pytest.raises(ConfigurationError, match="AUTH0_DOMAIN"):
        Settings(**without_domain).require_auth0(management_api=False)


def test_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILE_FRESH_TTL_SECONDS", "42")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    settings = Settings()
    assert settings.profile_fresh_ttl_seconds == 42
    assert settings.redis_url == "redis://cache:6379/0"


def test_a_database_url_must_be_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        Settings(database_url="mysql://db/x")


def test_the_reload_factory_serves_the_endpoint_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from userapi.commands.asgi import create

    for name, value in {
        **REQUIRED,
        "auth0_client_secret": "s",
        "userapi_endpoint": "list-users",
    }.items():
        monkeypatch.setenv(name.upper(), value)
    paths = create().openapi()["paths"]
    assert list(paths) == ["/users"]
    assert list(paths["/users"]) == ["get"]
