"""The server's frame: health, readiness, the token, body limits, JSON errors, metrics, CLI."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from resnet.serve import Client, ServeSettings, create_app
from resnet.serve.client import ApiError


@pytest.fixture
def settings(tmp_path):
    return ServeSettings(runs=tmp_path / "runs", warm=False, backend="eager")


def test_liveness_readiness_and_openapi(settings):
    app = create_app(settings)
    with TestClient(app) as c:
        assert c.get("/livez").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        schema = c.get("/openapi.json").json()
        paths = set(schema["paths"])
        for p in (
            "/v1/predict",
            "/v1/models",
            "/v1/runs",
            "/v1/runs/{run_id}/events",
            "/v1/runs/{run_id}/stop",
            "/v1/datasets",
        ):
            assert p in paths, sorted(paths)
        docs = c.get("/docs")  # the API docs work offline: Swagger UI is served from here
        assert docs.status_code == 200 and "cdn" not in docs.text.lower()
        assert "https://" not in docs.text
        catalogue = {m["name"]: m for m in c.get("/v1/catalogue").json()}
        assert catalogue["plain20"]["skips"] is False and catalogue["resnet50"]["depth"] == 50
        info = c.get("/v1/catalogue/resnet20").json()
        assert info["params"] == 269_722 and info["macs"] > 40e6
        assert c.get("/v1/catalogue/resnet21").status_code == 404
    # After shutdown (the lifespan drained) the app reports itself not ready.
    assert app.state.ready is False and app.state.draining is True
    with TestClient(app, raise_server_exceptions=False) as c:
        pass


def test_not_ready_while_draining_answers_503_with_retry_after(settings):
    app = create_app(settings)
    with TestClient(app) as c:
        app.state.draining = True
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json() == {"error": "draining"}
        assert r.headers["retry-after"] == "1"


def test_the_token_guards_the_api_the_page_and_metrics_but_not_health(settings):
    settings.token = "s3cret"
    with TestClient(create_app(settings)) as c:
        assert c.get("/livez").status_code == 200
        missing = c.get("/v1/runs")
        assert missing.status_code == 401 and "token" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = c.get("/v1/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json() == {"error": "wrong token"}
        assert c.get("/metrics").status_code == 401
        ok = c.get("/v1/runs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/").status_code == 401
        page = c.get("/?token=s3cret")  # the page sets a cookie its own API calls then carry
        assert page.status_code == 200 and "resnet_token" in c.cookies  # then a redirect to /
        assert c.get("/v1/runs").status_code == 200


def test_bodies_over_the_limit_get_413_json_and_the_server_keeps_serving(settings):
    settings.predict_body_mb = 0.01  # 10 KiB
    with TestClient(create_app(settings)) as c:
        big = b"x" * 20_000
        r = c.post("/v1/predict", files={"files": ("a.png", big, "image/png")})
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            for _ in range(20):
                yield b"y" * 1000

        r = c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["error"]
        assert c.get("/livez").status_code == 200


def test_errors_are_json_and_metrics_count_requests(settings):
    with TestClient(create_app(settings)) as c:
        r = c.get("/v1/no-such-thing")
        assert r.status_code == 404 and "error" in r.json()
        r = c.post("/v1/runs", content=b"{not json", headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "error" in r.json()
        text = c.get("/metrics").text
        assert "resnet_requests_total" in text and "resnet_request_seconds_bucket" in text
        assert 'route="/v1/runs",status="422"' in text and 'route="unmatched"' in text


def test_the_python_client_speaks_the_api_of_a_real_server(settings):
    server, port = _serve(settings)
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            assert client.ready() and client.runs() == []
            with pytest.raises(ApiError) as e:
                client.run("no-such-run")
            assert e.value.status == 404 and "no-such-run" in e.value.message
    finally:
        server.should_exit = True


def _serve(settings):
    """uvicorn on a free loopback port in a thread; returns (server, port) once ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, port


def test_serve_command_is_listed_with_its_safety_flags(capsys):
    from resnet.cli import main

    # In this process: a fresh interpreter would spend seconds importing torch to print help.
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--runs", "--token", "--max-batch", "--max-wait-ms", "--max-pixels", "--model"):
        assert flag in out
