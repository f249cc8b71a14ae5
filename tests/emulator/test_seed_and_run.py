"""The seed file, load_seed and run() (with uvicorn replaced: no sockets in unit tests)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from userapi.emulator import Emulator, EmulatorConfig, default_seed_path, load_seed, run

AUTH0_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_the_packaged_seed_is_realistic() -> None:
    packaged = resources.files("userapi.emulator") / "seed_users.json"
    users = load_seed(str(packaged))
    assert users == load_seed(default_seed_path())
    assert 4 <= len(users) <= 10
    ids = [u["user_id"] for u in users]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "auth0|64f1c2a9e4b0a1b2c3d4e5f6"
    assert "google-oauth2|103547991597142817347" in ids
    for user in users:
        assert "@" in user["email"]
        assert user["name"]
        assert user["picture"].startswith("https://")
        assert AUTH0_TIMESTAMP.fullmatch(user["created_at"])
        assert AUTH0_TIMESTAMP.fullmatch(user["updated_at"])
        assert user["identities"]
        assert user["user_id"].endswith(user["identities"][0]["user_id"])
        assert isinstance(user["user_metadata"], dict)
        assert isinstance(user["app_metadata"], dict)
    assert users[0]["password"] == "correct horse battery staple"
    assert users[0]["permissions"] == ["read:users"]
    four = {"read:users", "create:users", "update:users", "delete:users"}
    assert any(set(u.get("permissions", [])) == four for u in users)


def test_seed_only_fields_never_reach_profiles() -> None:
    emulator = Emulator(
        EmulatorConfig(base_url="http://x", seed_users=load_seed(default_seed_path()))
    )
    for user in emulator.users.values():
        assert "password" not in user
        assert "permissions" not in user
    assert emulator.store.permissions["auth0|64f1c2a9e4b0a1b2c3d4e5f6"] == ["read:users"]


def test_seeding_does_not_mutate_the_given_list() -> None:
    seed = [{"user_id": "auth0|1", "email": "a@b.co", "password": "pw", "permissions": ["x"]}]
    emulator = Emulator(EmulatorConfig(base_url="http://x", seed_users=seed))
    emulator.users["auth0|1"]["email"] = "changed@b.co"
    assert seed[0] == {"user_id": "auth0|1", "email": "a@b.co", "password": "pw",
                       "permissions": ["x"]}  # fmt: skip
    assert AUTH0_TIMESTAMP.fullmatch(emulator.users["auth0|1"]["created_at"])  # filled in


def test_load_seed_accepts_an_array_or_an_object(tmp_path: Path) -> None:
    users = [{"user_id": "auth0|1", "email": "a@b.co"}]
    as_array = tmp_path / "array.json"
    as_array.write_text(json.dumps(users))
    as_object = tmp_path / "object.json"
    as_object.write_text(json.dumps({"users": users}))
    assert load_seed(as_array) == users
    assert load_seed(str(as_object)) == users


@pytest.mark.parametrize(
    "content", ['{"people": []}', '[{"email": "a@b.co"}]', '[{"user_id": 5}]', '"x"']
)
def test_load_seed_rejects_other_shapes(tmp_path: Path, content: str) -> None:
    path = tmp_path / "seed.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="user_id"):
        load_seed(path)


def test_run_serves_the_seeded_emulator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([{"user_id": "auth0|1", "email": "a@b.co"}]))

    run("127.0.0.1", 8765, seed_path=str(seed), latency_ms=25.0, base_url=None)
    ((app, kwargs),) = calls
    assert (kwargs["host"], kwargs["port"], kwargs["loop"]) == ("127.0.0.1", 8765, "auto")
    assert callable(app)
    assert "http://127.0.0.1:8765" in capsys.readouterr().out

    run("0.0.0.0", 9000, seed_path=None, latency_ms=0.0, base_url="http://auth0.local:9000/")
    assert "http://auth0.local:9000 (5 users)" in capsys.readouterr().out
