"""Fixtures for end-to-end tests: the emulator and `userapi serve <endpoint>`, wired to the
session's real Redis and to PostgreSQL through PgBouncer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.emulator import EmulatorHandle, start_emulator


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(timeout=20)
    yield handle
    handle.close()


@pytest.fixture
def clean_emulator(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    emulator.reset()
    emulator.latency(0)
    yield emulator
    emulator.reset()
    emulator.latency(0)
