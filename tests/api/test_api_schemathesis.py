"""Schemathesis against the live server: generated requests never get a 5xx or a response the schema does not allow.

Cases come from schemathesis' Hypothesis strategies per operation (valid and invalid data); its
pytest-plugin entry points (`from_fixture`) break on pytest 9, so the loop is ours.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")  # a dev dependency

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import ApiSystem, ServerThread, add_key  # noqa: E402
from tests.conftest import Cluster  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = 25  # per operation and mode: ~550 requests, about half a minute


@pytest.fixture(scope="module")
def fuzz_key(cluster: Cluster, api_system: ApiSystem) -> Iterator[str]:
    name = f"fuzz{secrets.token_hex(3)}"
    key = f"vc_{secrets.token_urlsafe(24)}"
    cluster.kubectl("create", "namespace", api_system.prefix + name)
    add_key(cluster, api_system, name, f"sha256:{hashlib.sha256(key.encode()).hexdigest()}")
    yield key
    cluster.kubectl("delete", "namespace", api_system.prefix + name, "--wait=false", check=False)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_conforms_to_its_schema(api_server: ServerThread, fuzz_key: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11

    for operation in operations:
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, no body)
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
