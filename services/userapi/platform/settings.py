"""Every setting of every endpoint, read from the environment (one class, UPPERCASE names).

docs/configuration.md lists each one with its Helm value; keep the three in step.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(Exception):
    pass


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Auth0 -----------------------------------------------------------------------------------
    # Required to serve (see require_auth0); `userapi migrate` runs without them.
    auth0_domain: str = Field(
        default="",
        description="Tenant domain (example.us.auth0.com) or a full http(s)://host:port base URL.",
    )
    auth0_audience: str = Field(
        default="", description="API identifier that access tokens must carry in aud."
    )
    auth0_client_id: str = Field(
        default="", description="Management API client (machine-to-machine app)."
    )
    auth0_client_secret: SecretStr | None = None
    auth0_client_secret_file: Path | None = Field(
        default=None, description="File holding the client secret (a mounted Kubernetes Secret)."
    )
    auth0_management_audience: str | None = Field(
        default=None, description="Defaults to <base URL>/api/v2/."
    )
    auth0_connection: str = Field(
        default="Username-Password-Authentication",
        description="Database connection that create-user creates users in.",
    )
    auth0_events_secret: SecretStr | None = Field(
        default=None, description="Bearer secret Auth0 Event/Log Streams send to auth0-events."
    )
    auth0_events_secret_file: Path | None = None
    event_dedupe_seconds: float = Field(default=86400.0, gt=0)
    idempotency_ttl_seconds: float = Field(default=86400.0, gt=0)
    auth0_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    auth0_read_timeout_seconds: float = Field(default=5.0, gt=0)
    auth0_request_budget_seconds: float = Field(
        default=8.0,
        gt=0,
        description="Total time one Management API call may take, retries included.",
    )
    auth0_max_retries: int = Field(default=3, ge=0, le=10)
    auth0_max_connections: int = Field(default=20, ge=1)

    # Access-token verification ----------------------------------------------------------------
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=600, ge=10)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)

    # Profile cache -----------------------------------------------------------------------------
    redis_url: str | None = Field(default=None, description="Unset: an in-process LRU cache.")
    # Not tighter: both waits include event-loop lag, which at 50+ concurrent requests on one
    # core reaches tens of ms while Redis itself answers in well under one.
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=5)
    redis_connect_timeout_seconds: float = Field(default=0.25, gt=0, le=5)
    # Short: it is also how soon a Redis that is back (a restart, a failover) is used again.
    redis_retry_after_error_seconds: float = Field(
        default=0.25,
        ge=0,
        description="After Redis failed to answer, skip it this long; then one call tries it.",
    )
    redis_key_prefix: str = "userapi:"
    # Security: docs/architecture.md ("Credentials shared through Redis").
    shared_cache_key: SecretStr | None = Field(
        default=None,
        description="Seals the JWKS and Management token shared through Redis (32+ characters;"
        " keys after the first, separated by whitespace, are still accepted while rotating).",
    )
    shared_cache_key_file: Path | None = Field(
        default=None, description="File holding SHARED_CACHE_KEY (a mounted Kubernetes Secret)."
    )
    profile_fresh_ttl_seconds: float = Field(default=300.0, gt=0)
    profile_ttl_jitter: float = Field(default=0.1, ge=0, le=0.5)
    profile_stale_ttl_seconds: float = Field(default=3600.0, ge=0)
    profile_negative_ttl_seconds: float = Field(default=30.0, ge=0)
    profile_lock_seconds: float = Field(default=2.0, gt=0)
    profile_include_app_metadata: bool = False
    memory_cache_max_entries: int = Field(default=10_000, ge=1)

    # Database ----------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="postgresql:// URL (the PgBouncer sidecar). Unset: SQLite."
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="Password for DATABASE_URL's user, kept out of the URL (any characters).",
    )
    sqlite_path: Path = Path(".dev/userapi.sqlite3")
    db_pool_max_size: int = Field(default=4, ge=1, le=100)
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    db_startup_grace_seconds: float = Field(
        default=5.0, ge=0, description="How long to retry while the PgBouncer sidecar starts."
    )
    db_command_timeout_seconds: float = Field(default=5.0, gt=0)

    # Process -----------------------------------------------------------------------------------
    port: int = Field(
        default=8080, ge=1, le=65535, description="`userapi serve` (Knative sets it)."
    )
    userapi_endpoint: str = Field(
        default="get-user",
        description="The endpoint `uvicorn --factory userapi.commands.asgi:create` serves.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_timeout_seconds: int = Field(default=10, ge=0, le=600)

    # Telemetry (docs/observability.md): OpenTelemetry's own variable names. An OTLP endpoint
    # turns it on; unset (or OTEL_SDK_DISABLED=true), its SDK is never imported.
    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP base URL; /v1/traces and /v1/metrics are appended."
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, description="Full URL for spans alone (used as is)."
    )
    otel_exporter_otlp_metrics_endpoint: str | None = Field(
        default=None, description="Full URL for metrics alone (used as is)."
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        default=None, description="key=value,... sent with every export (a Secret in the chart)."
    )
    otel_exporter_otlp_timeout: int = Field(default=10000, ge=1, description="Milliseconds.")
    otel_traces_exporter: Literal["otlp", "none"] = "otlp"
    otel_metrics_exporter: Literal["otlp", "none"] = "otlp"
    otel_service_name: str = Field(default="userapi", min_length=1)
    otel_resource_attributes: str = Field(default="", description="key=value,... on every signal.")
    otel_traces_sampler: Literal[
        "parentbased_traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "traceidratio",
        "always_on",
        "always_off",
    ] = "parentbased_traceidratio"
    otel_traces_sampler_arg: float = Field(
        default=1.0, ge=0, le=1, description="The ratio of new traces sampled (…traceidratio)."
    )
    otel_metric_export_interval: int = Field(default=30000, ge=100, description="Milliseconds.")
    otel_bsp_schedule_delay: int = Field(default=2000, ge=10, description="Milliseconds.")
    otel_bsp_max_queue_size: int = Field(default=2048, ge=1)

    # Development tools (`userapi dev`, `userapi emulator`) ---------------------------------------
    userapi_dev_port: int = Field(default=8000, ge=1, le=65535)
    emulator_port: int = Field(default=8765, ge=1, le=65535)
    emulator_seed: Path | None = Field(default=None, description="Unset: the bundled seed users.")
    emulator_latency_ms: float = Field(default=0.0, ge=0)
    emulator_base_url: str | None = Field(default=None, description="Unset: http://HOST:PORT.")

    @model_validator(mode="after")
    def _database_url_scheme(self) -> Settings:
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("DATABASE_URL must be a postgresql:// URL")
        return self

    def require_auth0(self, *, management_api: bool = True) -> None:
        """Raise ConfigurationError naming every Auth0 setting an endpoint needs and lacks (the
        client secret only where it calls the Management API)."""
        missing = [
            name.upper()
            for name in ("auth0_domain", "auth0_audience", "auth0_client_id")
            if not getattr(self, name)
        ]
        no_secret = self.auth0_client_secret is None and self.auth0_client_secret_file is None
        if management_api and no_secret:
            missing.append("AUTH0_CLIENT_SECRET (or AUTH0_CLIENT_SECRET_FILE)")
        if missing:
            raise ConfigurationError("missing settings: " + ", ".join(missing))

    def otlp_endpoint(self, signal: Literal["traces", "metrics"]) -> str | None:
        """Where `signal` is exported, or None when it is not: the spec's rules (a per-signal
        URL as is, else the base URL + /v1/<signal>; an exporter of "none" or the SDK disabled
        turns it off)."""
        if self.otel_sdk_disabled:
            return None
        if signal == "traces":
            exporter, own = self.otel_traces_exporter, self.otel_exporter_otlp_traces_endpoint
        else:
            exporter, own = self.otel_metrics_exporter, self.otel_exporter_otlp_metrics_endpoint
        if exporter == "none":
            return None
        if own:
            return own
        base = self.otel_exporter_otlp_endpoint
        return f"{base.rstrip('/')}/v1/{signal}" if base else None

    @cached_property
    def auth0_base_url(self) -> str:
        domain = self.auth0_domain.strip().rstrip("/")
        if domain.startswith(("http://", "https://")):
            return domain
        return f"https://{domain}"

    @cached_property
    def auth0_host(self) -> str:
        return self.auth0_base_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]

    @cached_property
    def issuer(self) -> str:
        # Auth0 issues tokens with the trailing slash; comparison is exact.
        return self.auth0_base_url + "/"

    @cached_property
    def management_audience(self) -> str:
        return self.auth0_management_audience or f"{self.auth0_base_url}/api/v2/"

    # The secret readers read their file on every use, synchronously: a few bytes on the
    # tmpfs of a Secret mount, cheaper than a hop to a thread, and a rotated secret is live at
    # once. An unreadable file raises OSError, which the callers answer as 502/503.
    def events_secret(self) -> str | None:
        if self.auth0_events_secret_file is not None:
            return self.auth0_events_secret_file.read_text(encoding="utf-8").strip() or None
        if self.auth0_events_secret is not None:
            return self.auth0_events_secret.get_secret_value() or None
        return None

    def shared_cache_keys(self) -> list[str] | None:
        """SHARED_CACHE_KEY(_FILE)'s keys, the sealing one first; None when neither is set."""
        if self.shared_cache_key_file is not None:
            return self.shared_cache_key_file.read_text(encoding="utf-8").split()
        if self.shared_cache_key is not None:
            return self.shared_cache_key.get_secret_value().split()
        return None

    def client_secret(self) -> str:
        """Read on demand so that a rotated mounted secret is picked up at the next token fetch."""
        if self.auth0_client_secret_file is not None:
            return self.auth0_client_secret_file.read_text(encoding="utf-8").strip()
        assert self.auth0_client_secret is not None
        return self.auth0_client_secret.get_secret_value()
