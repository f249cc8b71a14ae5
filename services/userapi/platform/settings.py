"""Every setting of every endpoint, read from the environment (one class, UPPERCASE names).

Each field's description is its documentation: docs/configuration.md's tables are generated
from them (`make manifests`), one table per `# Section ---` comment below, and a test fails
when they are stale. `shown_default` is the Default column where the value alone would not
say it (a setting that is required, or whose absence means something).
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
        description=(
            "Tenant domain (`example.us.auth0.com`) or an `https://` base URL. The expected token"
            " issuer is the base URL plus `/`. An `http://` URL (the emulator's,"
            " `http://127.0.0.1:8765`) is refused unless `AUTH0_ALLOW_INSECURE_HTTP` is set."
        ),
        json_schema_extra={"shown_default": "required to serve"},
    )
    auth0_allow_insecure_http: bool = Field(
        default=False,
        description=(
            "Accept an `http://` `AUTH0_DOMAIN`, over which the client secret, the Management"
            " API token and the JWKS travel in cleartext: local development against the emulator"
            " only (`userapi dev`, the test harness and the chart's `local: true` set it)."
        ),
    )
    auth0_audience: str = Field(
        default="",
        description="The API identifier access tokens must carry in `aud`.",
        json_schema_extra={"shown_default": "required to serve"},
    )
    auth0_client_id: str = Field(
        default="",
        description=(
            "Machine-to-machine application used for the Management API. Needs the `read:users` "
            "grant (and `create:users`, `update:users`, `delete:users` for the write endpoints)."
        ),
        json_schema_extra={"shown_default": "required to serve"},
    )
    auth0_client_secret: SecretStr | None = Field(
        default=None, description="Its secret. Prefer `AUTH0_CLIENT_SECRET_FILE` in a cluster."
    )
    auth0_client_secret_file: Path | None = Field(
        default=None,
        description=(
            "A file holding the secret (a mounted Kubernetes Secret). Read at each token fetch, so "
            "a rotated secret is picked up without a restart. One of the two is required by every "
            "endpoint that calls the Management API (all but auth0-events, which is neither given "
            "nor asks for it)."
        ),
    )
    auth0_management_audience: str | None = Field(
        default=None,
        description=(
            "Only for custom domains, where the Management API audience still names the canonical "
            "domain."
        ),
        json_schema_extra={"shown_default": "`<base URL>/api/v2/`"},
    )
    auth0_connection: str = Field(
        default="Username-Password-Authentication",
        description="The database connection create-user creates users in.",
    )
    auth0_events_secret: SecretStr | None = Field(
        default=None,
        description=(
            "The bearer secret Auth0 Event Streams / Log Streams send to `POST /events/auth0`; "
            "compared in constant time."
        ),
        json_schema_extra={"shown_default": "— (auth0-events answers 503)"},
    )
    auth0_events_secret_file: Path | None = Field(
        default=None, description="The same, from a mounted file."
    )
    event_dedupe_seconds: float = Field(
        default=86400.0,
        gt=0,
        description=(
            "How long a change event's id is remembered to drop redeliveries; an event older "
            "than this is ignored (its id may have been forgotten)."
        ),
        json_schema_extra={"shown_default": "`86400`"},
    )
    events_max_items: int = Field(
        default=1000,
        ge=1,
        description=(
            "Items (events or log entries) one auth0-events delivery may hold; a delivery with "
            "more is refused whole with a 413 before anything is applied. Auth0 documents no "
            "batch size and does not retry a 4xx: raise it if the stream's Health tab shows "
            "413s."
        ),
    )
    auth0_clock_skew_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description=(
            "How far an Auth0 time (an event's `time`, a profile's `updated_at`) may run ahead "
            "of this process's clock; a later one is believed only up to now plus this."
        ),
    )
    idempotency_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long create-user keeps an `Idempotency-Key` and its response.",
        json_schema_extra={"shown_default": "`86400`"},
    )
    idempotency_lease_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "How long a create-user request holds its `Idempotency-Key` before another request "
            "with the key may take it over (a holder that died mid-create)."
        ),
        json_schema_extra={"shown_default": "2 x `AUTH0_REQUEST_BUDGET_SECONDS` + 5"},
    )
    auth0_connect_timeout_seconds: float = Field(
        default=2.0, gt=0, description="TCP+TLS connect timeout per Auth0 call."
    )
    auth0_read_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Read timeout per Auth0 call."
    )
    auth0_request_budget_seconds: float = Field(
        default=8.0,
        gt=0,
        description=(
            "Total time one Management API call may take, retries and rate-limit waits included. "
            "Keep it well under the service's `timeoutSeconds`."
        ),
    )
    auth0_max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description=(
            "Retries after the first attempt: for 429 always, for 5xx/network errors only on "
            "idempotent calls."
        ),
    )
    auth0_max_connections: int = Field(
        default=20, ge=1, description="Size of the per-process httpx connection pool to Auth0."
    )
    auth0_management_rate_per_second: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Management API calls per second that every pod together may send: one token bucket "
            "in the shared Redis (docs/architecture.md). Set it to the tenant's plan: Free 2, "
            "Enterprise 16, Essentials/Professional 3 (user writes 200/min; reads 500/min). "
            "Unset: no budget, each call is sent at once."
        ),
    )
    auth0_management_burst: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Calls the shared budget may send at once after a quiet spell (the bucket's size): "
            "Free 2, Essentials/Professional 20 (writes; 40 for reads), Enterprise 50."
        ),
        json_schema_extra={"shown_default": "`AUTH0_MANAGEMENT_RATE_PER_SECOND`, rounded up"},
    )
    auth0_management_expected_pods: int = Field(
        default=1,
        ge=1,
        description=(
            "While Redis is unreachable each pod spends its own share of the budget: the rate "
            "and burst divided by this. Set it to the usual number of pods of all endpoints."
        ),
    )

    # Access tokens ----------------------------------------------------------------------------
    jwt_leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew tolerated on `exp`/`iat`."
    )
    jwks_cache_seconds: int = Field(
        default=600,
        ge=10,
        description=(
            "How long the signing keys are trusted before a refetch (Auth0 suggests 5 to 10 "
            "minutes); also the lifetime of the copy shared through Redis."
        ),
    )
    jwks_refetch_cooldown_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Minimum time between refetches triggered by an unknown `kid`.",
    )

    # Client quotas -----------------------------------------------------------------------------
    client_quota_requests: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Requests each client (the token's `azp`, else its `sub`) may make to this endpoint "
            "per window, counted across pods in Redis; over it, 429 with `Retry-After`. Unset: "
            "no quota. The chart sets it per endpoint (`endpoints.<key>.clientQuota`)."
        ),
    )
    client_quota_window_seconds: int = Field(
        default=60,
        ge=1,
        le=86400,
        description="The quota's window: a fixed window, the same for every pod.",
    )

    # Profile cache -----------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description=(
            "`redis://` or `rediss://` URL of the Redis every pod shares: one node or a primary, "
            "not a Redis Cluster (reads are batched as `MGET`)."
        ),
        json_schema_extra={"shown_default": "— (in-process LRU)"},
    )
    # Not tighter: both waits include event-loop lag, which at 50+ concurrent requests on one
    # core reaches tens of ms while Redis itself answers in well under one.
    redis_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description=(
            "Per-command timeout, including the wait for a free connection (64 per process). A "
            "cache must fail fast: an error is a miss. Not lower: the wait includes event-loop "
            "lag, which at 50 to 100 concurrent requests per pod reached 50 ms in `make bench` and "
            "turned hits into misses."
        ),
    )
    redis_connect_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description=(
            "Connect timeout (a burst of requests opens up to 64 connections at once, each waiting "
            "on the same busy event loop)."
        ),
    )
    # Short: it is also how soon a Redis that is back (a restart, a failover) is used again.
    redis_retry_after_error_seconds: float = Field(
        default=0.25,
        ge=0,
        description=(
            "After Redis failed to answer (a timeout or a refused connection with no other call "
            "answered meanwhile), the process skips Redis for this long; then one call probes it "
            "while the others keep skipping until it has answered. A dead Redis costs one timeout "
            "per interval, not one per request, and a Redis that is back (a restart, a failover) is"
            " used again within the interval."
        ),
    )
    redis_key_prefix: str = Field(
        default="userapi:",
        description="Prefix of every key (share one Redis between installations).",
    )
    # Security: docs/security.md ("Credentials shared through Redis").
    shared_cache_key: SecretStr | None = Field(
        default=None,
        description=(
            "Seals (AES-256-GCM) the JWKS and the Management API token that pods share through "
            "Redis, so that whoever reaches Redis can neither plant signing keys nor read the "
            "token: 32+ characters. Keys after the first, separated by whitespace, still open "
            "entries while rotating. Unset with `REDIS_URL` set: those two entries are not "
            "shared (each pod fetches its own). Prefer `SHARED_CACHE_KEY_FILE` in a cluster."
        ),
    )
    shared_cache_key_file: Path | None = Field(
        default=None,
        description=(
            "A file holding `SHARED_CACHE_KEY` (a mounted Kubernetes Secret), read at each use "
            "so a rotated key is picked up without a restart. Not given to auth0-events."
        ),
    )
    profile_fresh_ttl_seconds: float = Field(
        default=300.0, gt=0, description="How long a cached profile is served without asking Auth0."
    )
    profile_ttl_jitter: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description=(
            "± fraction applied to the fresh TTL so entries filled together do not expire together."
        ),
    )
    profile_stale_ttl_seconds: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "How much longer an expired profile is kept to stand in when Auth0 fails "
            "(stale-if-error)."
        ),
    )
    profile_negative_ttl_seconds: float = Field(
        default=30.0, ge=0, description='How long "no such user" is remembered.'
    )
    profile_lock_seconds: float = Field(
        default=2.0,
        gt=0,
        description=(
            "Lifetime of the cross-pod fill lock; a pod that finds it taken waits up to this long "
            "for the other pod's result."
        ),
    )
    profile_include_app_metadata: bool = Field(
        default=False,
        description=(
            "Return Auth0 `app_metadata` in profiles. Off by default: it often holds data users "
            "must not see."
        ),
    )
    memory_cache_max_entries: int = Field(
        default=10000,
        ge=1,
        description="Size of the in-process LRU used when `REDIS_URL` is unset.",
    )
    local_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "With `REDIS_URL`: how long a process may answer from its own copy of a profile and "
            "an account row (never past the profile's fresh TTL). Every write is announced on "
            "Redis (`<REDIS_KEY_PREFIX>invalidate`) and drops every process's copy within "
            "milliseconds; this bounds only a change that was never announced (a writer that "
            "died between its commit and its announcement, SQL run by hand). While a process "
            "cannot listen to Redis it keeps no copy. 0 turns the copy off."
        ),
    )
    local_cache_max_entries: int = Field(
        default=10000,
        ge=1,
        description="How many profiles and account rows a process's own copy holds at most.",
    )

    # Database ----------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description=(
            "`postgresql://user@127.0.0.1:6432/userapi`: in a cluster, the PgBouncer sidecar. A "
            "password in the URL works too, but belongs in `DATABASE_PASSWORD`."
        ),
        json_schema_extra={"shown_default": "— (SQLite)"},
    )
    database_password: SecretStr | None = Field(
        default=None,
        description=(
            "The password for `DATABASE_URL`'s user, given apart from the URL so it needs no "
            "escaping. The Helm chart sets it from `database.existingSecret`."
        ),
    )
    sqlite_path: Path = Field(
        default=Path(".dev/userapi.sqlite3"),
        description="The embedded database used when `DATABASE_URL` is unset (`make dev`).",
    )
    db_pool_max_size: int = Field(
        default=4,
        ge=1,
        le=100,
        description=(
            "Connections per process to PgBouncer (cheap: PgBouncer multiplexes them onto its few "
            "server connections)."
        ),
    )
    db_connect_timeout_seconds: float = Field(default=2.0, gt=0, description="Connect timeout.")
    db_startup_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "Until the first connection succeeds, refused connections are retried this long "
            "(Knative gives no start order between the app and the sidecar)."
        ),
    )
    db_command_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Per-statement timeout."
    )

    # Process -----------------------------------------------------------------------------------
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Listening port of `userapi serve` (Knative sets it).",
    )
    userapi_endpoint: str = Field(
        default="get-user",
        description=(
            "The endpoint the skaffold dev image's `userapi reload` serves (the chart sets it with"
            " `devMode`)."
        ),
    )
    api_docs: bool = Field(
        default=False,
        description=(
            "Serve the interactive `/docs` and `/openapi.json`. Off in deployments: a served "
            "endpoint answers them 404, so it hands no one a map of the API; `userapi dev` always "
            "serves them, and docs/openapi.json is generated from the code (`userapi openapi`)."
        ),
    )
    api_host: str = Field(
        default="",
        description=(
            "The one host every operation is served on (the chart's `api.host`, an HTTPRoute "
            "in front of the endpoints' Knative Services): the OpenAPI document served with "
            "`API_DOCS` then names `https://API_HOST` as its server. Empty: each endpoint is "
            "on its own Knative host."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="`DEBUG`, `INFO`, `WARNING` or `ERROR`. Logs are JSON lines on stdout.",
    )
    shutdown_timeout_seconds: int = Field(
        default=10,
        ge=0,
        le=600,
        description=(
            "On SIGTERM, how long in-flight requests may finish before the process closes its "
            "clients and exits."
        ),
    )

    # Telemetry --------------------------------------------------------------------------------
    # docs/observability.md. OpenTelemetry's own variable names. An OTLP endpoint
    # turns it on; unset (or OTEL_SDK_DISABLED=true), its SDK is never imported.
    otel_sdk_disabled: bool = Field(
        default=False,
        description=(
            "`true` turns telemetry off whatever the endpoints say; nothing of OpenTelemetry's SDK "
            "is imported."
        ),
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/HTTP base URL of a collector, e.g. `http://otel-collector.observability:4318`; "
            "spans go to `/v1/traces`, metrics to `/v1/metrics`. Setting it (or a per-signal "
            "endpoint) turns telemetry on."
        ),
        json_schema_extra={"shown_default": "— (telemetry off)"},
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, description="Full URL for spans, used as is; wins over the base URL."
    )
    otel_exporter_otlp_metrics_endpoint: str | None = Field(
        default=None, description="Full URL for metrics, used as is; wins over the base URL."
    )
    otel_exporter_otlp_headers: SecretStr | None = Field(
        default=None,
        description=(
            "`key=value,...` (URL-encoded values) sent with every export, e.g. "
            "`authorization=Bearer%20...`: a secret, so the chart takes it from a Secret."
        ),
    )
    otel_exporter_otlp_timeout: int = Field(
        default=10000,
        ge=1,
        description=(
            "Milliseconds one export may take (on the exporter's thread, never a request's)."
        ),
    )
    otel_traces_exporter: Literal["otlp", "none"] = Field(
        default="otlp", description="`none` sends metrics only."
    )
    otel_metrics_exporter: Literal["otlp", "none"] = Field(
        default="otlp", description="`none` sends spans only."
    )
    otel_service_name: str = Field(
        default="userapi",
        min_length=1,
        description=(
            "`service.name` of every span and metric; the endpoint is the `userapi.endpoint` "
            "attribute."
        ),
    )
    otel_resource_attributes: str = Field(
        default="",
        description=(
            "`key=value,...` added to the resource (e.g. `deployment.environment.name=prod`)."
        ),
        json_schema_extra={"shown_default": "—"},
    )
    otel_traces_sampler: Literal[
        "parentbased_traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "traceidratio",
        "always_on",
        "always_off",
    ] = Field(
        default="parentbased_traceidratio",
        description=(
            "Also `parentbased_always_on`, `parentbased_always_off`, `traceidratio`, `always_on`, "
            "`always_off`. Parent-based: a request whose `traceparent` says sampled (Knative's "
            "activator and queue-proxy decide upstream) is always traced."
        ),
    )
    otel_traces_sampler_arg: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="The ratio of new traces (no incoming `traceparent`) that are sampled, 0 to 1.",
    )
    otel_metric_export_interval: int = Field(
        default=30000,
        ge=100,
        description="Milliseconds between metric exports (and a final one at shutdown).",
    )
    otel_bsp_schedule_delay: int = Field(
        default=2000,
        ge=10,
        description="Milliseconds between span exports (and a final one at shutdown).",
    )
    otel_bsp_max_queue_size: int = Field(
        default=2048,
        ge=1,
        description="Spans buffered before new ones are dropped (never blocks a request).",
    )

    # Development tools ------------------------------------------------------------------------
    # `userapi dev` and `userapi emulator`; never read by a served endpoint.
    userapi_dev_port: int = Field(
        default=8000, ge=1, le=65535, description="Port of `userapi dev`."
    )
    emulator_port: int = Field(
        default=8765, ge=1, le=65535, description="Port of `userapi emulator`."
    )
    emulator_seed: Path | None = Field(
        default=None,
        description=(
            "JSON file of users the emulator starts with (`userapi emulator`, and `userapi dev` "
            "without `AUTH0_DOMAIN`)."
        ),
        json_schema_extra={"shown_default": "bundled seed"},
    )
    emulator_latency_ms: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Delay added to each Management API call (`500` reproduces a slow tenant), in `userapi "
            "emulator` and `userapi dev`."
        ),
        json_schema_extra={"shown_default": "`0`"},
    )
    emulator_base_url: str | None = Field(
        default=None,
        description="The emulator's issuer base, when it is reached through another name.",
        json_schema_extra={"shown_default": "`http://HOST:PORT`"},
    )

    @model_validator(mode="after")
    def _auth0_over_tls(self) -> Settings:
        # The client secret, the Management API token and the signing keys all travel to this
        # address: a dev setting that reaches production must stop the process, not leak them.
        scheme = self.auth0_domain.strip().partition("://")[0].lower()
        if "://" not in self.auth0_domain or scheme == "https":
            return self
        if scheme == "http" and self.auth0_allow_insecure_http:
            return self
        raise ValueError(
            "AUTH0_DOMAIN must be a domain or an https:// URL (http:// only with"
            " AUTH0_ALLOW_INSECURE_HTTP=true, for local development)"
        )

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
    def idempotency_lease(self) -> float:
        # Unset: a holder gets two Auth0 budgets (a create, then an adoption's read) and the
        # database's work before another request may take its key over.
        if self.idempotency_lease_seconds is not None:
            return self.idempotency_lease_seconds
        return self.auth0_request_budget_seconds * 2 + 5

    @cached_property
    def management_audience(self) -> str:
        return self.auth0_management_audience or f"{self.auth0_base_url}/api/v2/"

    # The secret readers read their file on every use, synchronously: a few bytes on the
    # tmpfs of a Secret mount, cheaper than a hop to a thread, and a rotated secret is live at
    # once. An unreadable file raises OSError, which the callers answer as 502/503.
    def events_secret(self) -> str | None:
        return _secret(self.auth0_events_secret_file, self.auth0_events_secret) or None

    def shared_cache_keys(self) -> list[str] | None:
        """SHARED_CACHE_KEY(_FILE)'s keys, the sealing one first; None when neither is set."""
        keys = _secret(self.shared_cache_key_file, self.shared_cache_key)
        return None if keys is None else keys.split()

    def client_secret(self) -> str:
        """Read on demand so that a rotated mounted secret is picked up at the next token fetch."""
        secret = _secret(self.auth0_client_secret_file, self.auth0_client_secret)
        assert secret is not None
        return secret


def _secret(file: Path | None, value: SecretStr | None) -> str | None:
    """A secret from its mounted file (read now, so a rotated one is live at once), else from
    the environment; None when neither is set."""
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return None if value is None else value.get_secret_value()
