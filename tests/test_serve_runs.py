"""The training API over HTTP: data-set uploads, jobs, event streams, stop/resume, bad input."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from conftest import write_digits_folder
from fastapi.testclient import TestClient

import resnet
from resnet.serve.app import create_app
from resnet.serve.settings import ServeSettings

RUN_FILES = {
    "config.yaml",
    "metrics.csv",
    "last.pt",
    "best.pt",
    "curves.png",
    "summary.json",
    "confusion_matrix.png",
    "val_metrics.json",
    "val_clinical.json",
    "roc.png",
    "pr.png",
    "calibration.png",
}
SERVER_FILES = {"events.jsonl", "job.json", "misclassified.json"}


def _settings(tmp_path: Path) -> ServeSettings:
    return ServeSettings(
        runs=tmp_path / "runs",
        datasets=tmp_path / "datasets",
        warm=False,
        zip_members=200,
        zip_total_mb=64,
    )


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        yield c


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent))
    return buf.getvalue()


def _upload(client, data: bytes, name: str = "digits.zip"):
    return client.post("/v1/datasets", files={"file": (name, data, "application/zip")})


def _config(source: str, epochs: int) -> dict:
    return {
        "model": {"name": "resnet20"},
        "data": {"source": source, "batch_size": 32},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "run": {"epochs": epochs, "device": "cpu", "seed": 0},
    }


def _events(client, run_id: str, **headers) -> list[tuple[int, str, dict]]:
    """Reads a run's event stream to its end: (id, event name, payload) each."""
    out, fields = [], {}
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return out


def _wait(predicate, timeout: float = 60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_upload_train_stream_and_inspect_a_run(client, tmp_path):
    digits = write_digits_folder(tmp_path / "digits", per_class=10)
    r = _upload(client, _zip(digits))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["layout"] == "split" and ds["classes"][0] == "digit0"
    assert ds["counts"]["train"]["digit3"] == 8 and ds["counts"]["val"]["digit3"] == 2
    shown = client.get(f"/v1/datasets/{ds['id']}?samples=2").json()
    assert all(
        len(t) == 2 and t[0].startswith("data:image/png;base64,")
        for t in shown["thumbnails"].values()
    )
    assert ds["id"] in [d["id"] for d in client.get("/v1/datasets").json()["datasets"]]

    r = client.post("/v1/runs", json={"config": _config(ds["id"], 2), "name": "digits-run"})
    assert r.status_code == 202, r.text
    events = _events(client, "digits-run")
    names = [name for _, name, _ in events]
    assert names[0] == "run_start" and names[-1] == "run_end" and names.count("epoch_end") == 2
    assert "step" in names and [i for i, _, _ in events] == list(range(len(events)))
    assert events[-1][2]["status"] == "finished"

    # The same run through the Python API writes the same files.
    direct = tmp_path / "direct"
    cfg = _config(str(Path(ds["source"])), 2)
    cfg["run"]["out"] = str(direct)
    resnet.train(cfg, progress=False, log=None)
    served = tmp_path / "runs" / "digits-run"
    assert {p.name for p in direct.iterdir()} == RUN_FILES
    assert {p.name for p in served.iterdir()} - SERVER_FILES == RUN_FILES

    run = client.get("/v1/runs/digits-run").json()
    assert run["status"] == "finished" and len(run["metrics"]) == 2 and run["epochs"] == 2
    ev = run["evaluation"]
    assert ev["split"] == "val" and len(ev["per_class"]) == 10 and len(ev["confusion_matrix"]) == 10
    assert {"curves.png", "best.pt", "summary.json"} <= set(run["files"])
    listed = client.get("/v1/runs").json()
    assert [row["id"] for row in listed["runs"]] == ["digits-run"] and listed["queue"] == []
    png = client.get("/v1/runs/digits-run/files/curves.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    wrong = client.get("/v1/runs/digits-run/misclassified?limit=3").json()
    assert wrong["split"] == "val" and 0 < len(wrong["items"]) <= 3
    assert wrong["items"][0]["image"].startswith("data:image/png;base64,")
    assert wrong["items"][0]["true"] != wrong["items"][0]["predicted"]

    exported = client.post("/v1/runs/digits-run/export", json={"format": "torchscript"})
    assert exported.status_code == 200, exported.text
    assert exported.json()["parity"]["ok"]
    assert client.get(exported.json()["download"]).status_code == 200
    ir = client.post("/v1/runs/digits-run/export", json={"format": "openvino"})
    assert ir.status_code == 200, ir.text
    ir_files = [f["file"] for f in ir.json()["files"]]
    assert ir_files == ["best.openvino.xml", "best.openvino.bin"]
    got = [client.get(f["download"]) for f in ir.json()["files"]]
    assert got[0].content.lstrip().startswith(b"<?xml") and len(got[1].content) > 1000
    assert ir.json()["size_bytes"] == sum(len(r.content) for r in got)
    body = {"format": "openvino", "embed_preprocessing": True}
    pixels = client.post("/v1/runs/digits-run/export", json=body)
    assert pixels.status_code == 200, pixels.text
    assert pixels.json()["file"] == "best.pixels.openvino.xml" and pixels.json()["parity"]["ok"]

    # A reconnecting page gets only what it missed; a restarted server replays the file.
    tail = _events(client, "digits-run", **{"Last-Event-ID": str(len(events) - 2)})
    assert [i for i, _, _ in tail] == [len(events) - 1]
    with TestClient(create_app(_settings(tmp_path))) as again:
        assert [e[1] for e in _events(again, "digits-run")] == names
        assert again.get("/v1/runs/digits-run").json()["status"] == "finished"


def test_stop_and_resume_over_http(client, tmp_path):
    source = str(write_digits_folder(tmp_path / "digits", per_class=20, layout="flat"))
    r = client.post("/v1/runs", json={"config": _config(source, 6), "name": "cut"})
    assert r.status_code == 202, r.text

    def stepped():
        run = client.get("/v1/runs/cut").json()
        return run["progress"] is not None or run["status"] not in ("queued", "running")

    _wait(stepped)
    assert client.post("/v1/runs/cut/stop").status_code == 200
    events = _events(client, "cut")
    assert events[-1][1] == "run_end" and events[-1][2]["status"] == "stopped"
    run = client.get("/v1/runs/cut").json()
    assert run["status"] == "stopped" and len(run["metrics"]) < 6
    assert client.post("/v1/runs/cut/stop").status_code == 409  # not running any more

    r = client.post("/v1/runs/cut/resume")
    assert r.status_code == 202, r.text
    again = client.post("/v1/runs/cut/resume")
    assert again.status_code == 409 and "error" in again.json()
    resumed = _events(client, "cut", **{"Last-Event-ID": str(events[-1][0])})
    assert "run_start" in [name for _, name, _ in resumed]
    assert resumed[-1][1] == "run_end" and resumed[-1][2]["status"] == "finished"
    run = client.get("/v1/runs/cut").json()
    assert run["status"] == "finished" and [r["epoch"] for r in run["metrics"]] == list(range(1, 7))
    assert client.post("/v1/runs/cut/resume").status_code == 409  # finished


def _zip_of(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_bad_requests_get_json_errors_and_the_server_keeps_serving(client, tmp_path):
    png = (tmp_path / "a.png").write_bytes(b"") or b"\x89PNG\r\n\x1a\n"
    uploads = {
        "traversal": (_zip_of({"cls/../../evil.png": png}), 422),
        "absolute": (_zip_of({"/tmp/evil/a.png": png}), 422),
        "symlink": (_zip_of({"cls/a.png": png}, symlink="cls/link.png"), 422),
        "many members": (_zip_of({f"c/{i}.png": b"" for i in range(201)}), 413),
        "ratio bomb": (_zip_of({"c/zeros.png": bytes(20 << 20)}), 413),
        "too large": (_zip_of({f"c/{i}.png": bytes(17 << 20) for i in range(4)}), 413),
        "not a zip": (b"hello, not a zip at all", 415),
        "broken zip": (b"PK\x03\x04" + bytes(100), 422),
        "no layout": (_zip_of({"readme.txt": b"hi"}), 422),
    }
    for what, (data, status) in uploads.items():
        r = _upload(client, data)
        assert r.status_code == status and "error" in r.json(), (what, r.status_code, r.text)
    assert not [p for p in (tmp_path / "datasets").iterdir() if not p.name.startswith(".")]
    assert not list((tmp_path / "datasets").glob(".upload-*"))

    (tmp_path / "runs" / "done").mkdir(parents=True)
    (tmp_path / "runs" / "done" / "summary.json").write_text('{"model": "resnet20"}')
    cfg = _config("fashion-mnist", 1)
    requests = [
        ("get", "/v1/runs/nope", {}, 404),
        ("get", "/v1/runs/..%2F..", {}, None),
        ("get", "/v1/runs/..%2F../events", {}, None),
        ("get", "/v1/runs/a..b", {}, 422),
        ("get", "/v1/runs/done/files/..%2Fsummary.json", {}, None),
        ("get", "/v1/runs/done/files/secret.txt", {}, 404),
        ("get", "/v1/runs/done/files/best.pt", {}, 404),
        ("post", "/v1/runs", {"json": {"config": {"modle": {}}}}, 422),
        ("post", "/v1/runs", {"json": {"config": {"run": {"epochs": 0}}}}, 422),
        ("post", "/v1/runs", {"json": {"config": cfg, "recipe": "nope"}}, 422),
        ("post", "/v1/runs", {"json": {"config": _config("/no/such/folder", 1)}}, 422),
        ("post", "/v1/runs", {"json": {"config": cfg, "name": "../x"}}, 422),
        ("post", "/v1/runs", {"json": {"config": cfg, "name": "done"}}, 409),
        (
            "post",
            "/v1/runs",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("post", "/v1/runs/done/stop", {}, 409),
        ("post", "/v1/runs/done/resume", {}, 409),
        ("post", "/v1/runs/nope/resume", {}, 404),
        ("post", "/v1/runs/done/export", {"json": {"format": "onnx"}}, 409),
        ("post", "/v1/runs/done/export", {"json": {"format": "pdf"}}, 422),
        ("post", "/v1/runs/done/export", {"json": {"format": "keras", "int8": True}}, 422),
        (
            "post",
            "/v1/runs/done/export",
            {"json": {"format": "onnx", "embed_preprocessing": True}},
            422,
        ),
        ("get", "/v1/runs/done/misclassified?limit=0", {}, 422),
        ("get", "/v1/runs/done/misclassified", {}, 409),
        ("get", "/v1/datasets/nope", {}, 404),
        ("get", "/v1/datasets/..%2Fruns", {}, None),
        ("post", "/v1/datasets/path", {"json": {"path": "/no/such/folder"}}, 404),
        ("post", "/v1/datasets/path", {"json": {"path": str(tmp_path / "a.png")}}, 422),
        ("post", "/v1/datasets", {"data": {"x": "1"}}, 422),
    ]
    for method, url, kwargs, status in requests:
        r = getattr(client, method)(url, **kwargs)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        assert status is None or r.status_code == status, (url, r.status_code, r.text)
        assert "error" in r.json(), (url, r.text)
    assert client.get("/livez").status_code == 200
    rows = client.get("/v1/runs").json()["runs"]
    assert [(r["id"], r["status"]) for r in rows] == [("done", "finished")]
