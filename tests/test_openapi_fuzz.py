"""schemathesis against the real server's own /openapi.json: no 5xx, and every answer as documented.

The server runs as the README starts it (hypercorn subprocess). schemathesis generates requests for
every documented operation — valid bodies and, for the negative phase, invalid ones — and checks that
the server never answers 5xx and that status codes, content types and response bodies match the
document. User routes carry a real user's token, admin routes the admin token. The run is bounded
(a fixed number of cases per operation, derandomized) so that CI is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import Server, launch, open_user, wait_ready
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode

CASES_PER_OPERATION = 80
EXCLUDED = [schemathesis.checks.positive_data_acceptance]
"""Business refusals of schema-valid requests (insufficient funds 422, a weak password, a price off the
tick grid) are the exchange's job, not a schema mismatch; every other check runs."""


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(
        tmp_path_factory.mktemp("openapi"),
        extra_env={
            "QAEX_MAX_ACCOUNTS_PER_ADDRESS_PER_HOUR": "0",
            "QAEX_LOGIN_ADDRESS_FAILURES_PER_MINUTE": "0",
            "QAEX_LOGIN_BACKOFF_MAX_SECONDS": "0",
        },
    )
    wait_ready(running)
    yield running
    code = running.stop()
    assert code == 0, running.log()[-5000:]


@pytest.fixture(scope="module")
def tokens(fuzzed_server: Server) -> dict[str, str]:
    user = open_user(fuzzed_server)
    return {"user": user.token, "admin": fuzzed_server.admin_token}


def fuzz(operation: Any, token: str, mode: GenerationMode) -> int:
    """Run up to CASES_PER_OPERATION generated requests of one operation; raise on the first bad answer.
    Returns how many requests were sent (fewer when the operation has few distinct inputs)."""
    sent = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case) -> None:
        nonlocal sent
        sent += 1
        headers = dict(case.headers or {})
        headers.setdefault("Authorization", f"Bearer {token}")
        if case.path == "/api/events":  # a stream never ends by itself: bound it (tests/test_notifications.py)
            case.query = {**(case.query or {}), "timeout": "0.05"}
        case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

    check()
    return sent


def test_every_operation_answers_as_documented(fuzzed_server: Server, tokens: dict[str, str]) -> None:
    api = schemathesis.openapi.from_url(fuzzed_server.http_url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    failures: list[str] = []
    sent = 0
    for operation in operations:
        token = tokens["admin"] if operation.path.startswith("/api/admin/") else tokens["user"]
        for mode in GenerationMode:  # valid requests, then invalid ones (which must be clear 4xx)
            try:
                sent += fuzz(operation, token, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid
            except Exception as exc:  # collected, so that one run shows every operation's problem
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:3000]}")
        assert fuzzed_server.process.poll() is None, fuzzed_server.log()[-5000:]
    assert not failures, "\n\n".join(failures)
    print(f"schemathesis: {sent} requests over {len(operations)} operations")
    assert sent >= 2000, sent


def test_the_server_is_still_up_after_the_fuzzing(fuzzed_server: Server) -> None:
    assert httpx.get(fuzzed_server.http_url + "/health", timeout=5).status_code == 200
