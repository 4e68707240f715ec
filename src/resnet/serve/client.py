"""`Client`: the HTTP API of `resnet serve` from Python.

from resnet.serve import Client
c = Client("http://127.0.0.1:8000", token=None)
c.predict(["shirt.png"], top_k=3)["predictions"][0]["top_k"][0]["label"]
run = c.start_run({"model": {"name": "resnet20"}, "data": {"source": "fashion-mnist"}})
for event in c.events(run["id"]):
    print(event["event"], event.get("row"))
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    """A non-2xx answer: `status` and the server's one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Client:
    """A thin, typed wrapper over the /v1 API (every call is one HTTP request)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _json(self, method: str, path: str, **kw) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                message = r.json().get("error", r.text)
            except ValueError:
                message = r.text
            raise ApiError(r.status_code, message)
        return r.json()

    def ready(self) -> bool:
        """Whether the server has loaded its models and takes requests."""
        return self.http.get("/readyz").status_code == 200

    def models(self) -> list[dict]:
        """The served models with their classes and chosen backend."""
        return self._json("GET", "/v1/models")

    def predict(
        self,
        images: Sequence[str | os.PathLike | bytes],
        *,
        model: str | None = None,
        top_k: int = 5,
        cam: bool = False,
    ) -> dict:
        """Top-k classes (and Grad-CAM overlays with `cam`) for image files or encoded bytes."""
        encoded = [
            base64.b64encode(i if isinstance(i, bytes) else Path(i).read_bytes()).decode()
            for i in images
        ]
        body = {"images": encoded, "top_k": top_k, "cam": cam}
        if model:
            body["model"] = model
        return self._json("POST", "/v1/predict", json=body)

    def runs(self) -> list[dict]:
        """Every run folder the server sees, with its status and figures."""
        return self._json("GET", "/v1/runs")["runs"]

    def run(self, run_id: str) -> dict:
        """One run: status, config, metrics rows, per-class figures."""
        return self._json("GET", f"/v1/runs/{run_id}")

    def start_run(
        self, config: dict, *, name: str | None = None, recipe: str | None = None
    ) -> dict:
        """Queues a training job; returns the run (its `id` names its folder)."""
        body: dict[str, Any] = {"config": config}
        if name:
            body["name"] = name
        if recipe:
            body["recipe"] = recipe
        return self._json("POST", "/v1/runs", json=body)

    def stop(self, run_id: str) -> dict:
        """Asks a running job to stop at the next step (resumable)."""
        return self._json("POST", f"/v1/runs/{run_id}/stop")

    def resume(self, run_id: str) -> dict:
        """Queues a stopped run to go on where it stopped."""
        return self._json("POST", f"/v1/runs/{run_id}/resume")

    def events(self, run_id: str, since: int | None = None) -> Iterator[dict]:
        """The run's events as they happen (server-sent events), until it ends."""
        headers = {"Last-Event-ID": str(since)} if since is not None else {}
        with self.http.stream(
            "GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=None
        ) as r:
            if r.status_code >= 400:
                r.read()
                raise ApiError(r.status_code, r.json().get("error", r.text))
            for line in r.iter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:].strip())

    def upload_dataset(self, zip_path: str | os.PathLike) -> dict:
        """Uploads a ZIP (ImageFolder layout, or images + a CSV); returns its summary."""
        with open(zip_path, "rb") as f:
            files = {"file": (Path(zip_path).name, f, "application/zip")}
            return self._json("POST", "/v1/datasets", files=files)
