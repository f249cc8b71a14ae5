"""`userapi dev` (what `make dev` runs): the printed curl line must work as printed."""

from __future__ import annotations

import re
import shlex
import time

import httpx
import pytest

from harness.processes import USERAPI, ServiceProcess, free_port

pytestmark = pytest.mark.integration


def test_the_printed_curl_returns_the_sample_profile(tmp_path) -> None:
    port = free_port()
    process = ServiceProcess(
        [USERAPI, "dev", "--port", str(port)], env={"SQLITE_PATH": str(tmp_path / "dev.sqlite3")}
    )
    try:
        process.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=30)
        deadline = time.monotonic() + 10
        while "curl -s" not in process.log_text():
            assert time.monotonic() < deadline, process.log_text()
            time.sleep(0.1)
        curl = next(line for line in process.log_text().splitlines() if "curl -s" in line)
        args = shlex.split(curl)
        assert args[:3] == ["curl", "-s", "-H"]
        header, url = args[3], args[4]
        name, _, value = header.partition(": ")
        response = httpx.get(url, headers={name: value}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert re.fullmatch(r"auth0\|[0-9a-f]{24}", body["user_id"])
        assert body["email"] == "ada@example.com"
        assert body["account"]["plan"] == "pro"
        # The printed token carries read:users, so other users are readable too.
        other = httpx.get(
            url.rsplit("/", 1)[0] + "/google-oauth2%7C103547991597142817347",
            headers={name: value},
            timeout=10,
        )
        assert other.status_code == 200
        # Dev mode serves the API docs a deployed endpoint does not (API_DOCS).
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
        paths = httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
        assert {"/users", "/users/{user_id}", "/events/auth0"} <= set(paths)
    finally:
        process.terminate()
