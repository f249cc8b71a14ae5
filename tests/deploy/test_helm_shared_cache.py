"""The chart gives SHARED_CACHE_KEY_FILE exactly to the endpoints that read what other pods
sealed in Redis (issue 26, item 2): least privilege per endpoint and per mounted Secret."""

from __future__ import annotations

from typing import Any

from userapi import endpoints

from tests.support.chart import knative_services, render

MOUNT = "/var/run/secrets/userapi/shared-cache"


def _key_file(service: dict[str, Any]) -> str | None:
    spec = service["spec"]["template"]["spec"]
    app = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in app["env"]}
    volumes = [v for v in spec["volumes"] if v["name"] == "shared-cache-key"]
    mounts = [m for m in app["volumeMounts"] if m["name"] == "shared-cache-key"]
    if not volumes:
        assert not mounts
        assert "SHARED_CACHE_KEY_FILE" not in env
        return None
    (volume,) = volumes
    (mount,) = mounts
    assert mount["readOnly"] is True
    assert volume["secret"]["items"] == [{"key": "shared-cache-key", "path": "shared-cache-key"}]
    assert env["SHARED_CACHE_KEY_FILE"] == f"{mount['mountPath']}/shared-cache-key"
    return str(volume["secret"]["secretName"])


def test_the_key_is_mounted_where_the_endpoint_declares_it_reads_shared_credentials() -> None:
    services = knative_services(render({"redis": {"url": "rediss://cache.internal:6379/0"}}))
    for name, service in services.items():
        wanted = "userapi-shared-cache" if endpoints.load(name).shared_credentials else None
        assert _key_file(service) == wanted, name
    assert _key_file(services["auth0-events"]) is None


def test_no_redis_or_no_secret_mounts_no_key() -> None:
    for values in ({}, {"redis": {"url": "redis://r:6379/0", "sharedCacheKeySecret": ""}}):
        assert {_key_file(s) for s in knative_services(render(values)).values()} == {None}
    from_secret = render({"redis": {"existingSecret": "userapi-redis"}})
    assert _key_file(knative_services(from_secret)["get-user"]) == "userapi-shared-cache"


def test_dev_secrets_create_the_key_secret() -> None:
    objects = render(
        {"local": True, "devSecrets": {"create": True}, "redis": {"url": "redis://redis:6379/0"}}
    )
    (secret,) = [o for o in objects if o["metadata"]["name"] == "userapi-shared-cache"]
    assert len(secret["stringData"]["shared-cache-key"]) >= 32
