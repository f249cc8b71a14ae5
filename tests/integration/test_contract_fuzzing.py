"""Property-based contract testing: schemathesis generates requests from each endpoint's own
/openapi.json (valid ones, and invalid ones for every field) and sends them to that endpoint's
`userapi serve` process, on real Redis and PostgreSQL through PgBouncer, with a token that
carries every permission (the event secret for auth0-events). A run fails on any 5xx, any
status or content type the document does not declare, any response that breaks its schema,
any error body that is not {"error", "message", "request_id"}, and any invalid request that
is accepted.

The budget is fixed (a seeded, derandomized run of USERAPI_FUZZ_EXAMPLES examples per
operation and generation mode, 40 by default: about a minute for the whole API in CI). Raise
it locally, e.g. `USERAPI_FUZZ_EXAMPLES=500 pytest tests/integration/test_contract_fuzzing.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from harness.emulator import EmulatorHandle
from harness.userapi import Service, migrate, service_env, start_services

pytestmark = pytest.mark.integration

ENDPOINTS = ("get-user", "list-users", "create-user", "update-user", "delete-user", "auth0-events")
EVENTS_SECRET = "contract-fuzzing-events-secret-01"
EXAMPLES = int(os.environ.get("USERAPI_FUZZ_EXAMPLES", "40"))
SEED = 11


@pytest.fixture(scope="module")
def services(
    emulator: EmulatorHandle, redis_server: Any, database_url: str
) -> Iterator[dict[str, Service]]:
    migrate(database_url)
    env = service_env(emulator, redis_server.url, database_url)
    env["AUTH0_EVENTS_SECRET"] = EVENTS_SECRET
    env["API_DOCS"] = "true"  # the contract fuzzed is the one each endpoint serves
    started = start_services(ENDPOINTS, env)
    yield started
    for service in started.values():
        service.close()


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is {"error", "message", "request_id"}, the id the X-Request-Id header names."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or set(body) != {"error", "message", "request_id"}
        or not all(isinstance(value, str) for value in body.values())
        or body["request_id"] != response.headers.get("x-request-id", [None])[0]
    ):
        raise Failure(
            operation=case.operation.label,
            title="The error body is not the JSON error shape",
            message=f"{response.status_code}: {response.text[:300]}",
        )
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    error_shape,
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_keeps_its_contract(
    services: dict[str, Service], emulator: EmulatorHandle, endpoint: str, mode: GenerationMode
) -> None:
    service = services[endpoint]
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")
    # The credentials below are the caller's, not generated: a "negative" case that drops the
    # Authorization header would get it back and be judged as if it had none. (401 and 403 on
    # every endpoint are tests/integration/test_hostile_input.py's.) Extra query parameters
    # stay out too: an API may ignore them, and one with an empty name and a null value never
    # reaches the server (the transport drops it), yet would count as accepted invalid data.
    schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
    if endpoint == "auth0-events":
        credentials = EVENTS_SECRET
    else:
        permissions = ["read:users", "create:users", "update:users", "delete:users"]
        credentials = emulator.token("auth0|fuzzer000000000000000000000", permissions)
    headers = {"Authorization": f"Bearer {credentials}"}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"{endpoint}'s document is invalid: {result.err()}"
        operations.append(result.ok())
    assert operations, f"{endpoint} documents no operation"
    for operation in operations:

        @hypothesis.settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same examples on every run: a failure reproduces
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.seed(SEED)
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def keeps_contract(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=15)

        keeps_contract()
