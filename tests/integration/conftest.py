"""Fixtures for end-to-end tests: the emulator and `userapi serve <endpoint>`, wired to the
session's real Redis and to PostgreSQL through PgBouncer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import USERAPI, EmulatorHandle, ServiceProcess, free_port


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    port = free_port()
    process = ServiceProcess([USERAPI, "emulator", "--port", str(port)], env={})
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_healthy(f"{base_url}/.well-known/jwks.json", timeout=20)
        handle = EmulatorHandle(base_url)
        yield handle
        handle.http.close()
    finally:
        process.terminate()


@pytest.fixture(scope="session")
def emulator(emulator_process: EmulatorHandle) -> EmulatorHandle:
    return emulator_process


@pytest.fixture
def clean_emulator(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    emulator.reset()
    emulator.latency(0)
    yield emulator
    emulator.reset()
    emulator.latency(0)
