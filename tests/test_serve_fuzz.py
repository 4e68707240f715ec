"""Property-based fuzzing of the HTTP API from its own OpenAPI schema: no request gets a 5xx.

Bounded: a few examples per operation, no deadline. Left out: starting a training job and the
two ways of adding a data set (a valid random request would train or scan for real); their bad
requests are covered one by one in test_serve_runs.py.
"""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from resnet.serve.app import create_app
from resnet.serve.settings import ServeSettings

EXAMPLES = 20
SLOW = [("POST", "/v1/runs"), ("POST", "/v1/datasets"), ("POST", "/v1/datasets/path")]


def test_no_request_gets_a_server_error(tmp_path):
    app = create_app(ServeSettings(runs=tmp_path / "runs", datasets=tmp_path / "ds", warm=False))
    with TestClient(app):  # runs the lifespan: the job manager and model registry start
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for method, path in SLOW:
            schema = schema.exclude(method=method, path=path)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        for operation in operations:
            _fuzz(operation)


def _fuzz(operation) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call()
        assert response.status_code < 500, (case.method, case.path, response.text[:300])

    check()
