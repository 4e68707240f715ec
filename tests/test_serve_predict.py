"""`POST /v1/predict` and `/v1/models`: answers equal to `resnet predict`, micro-batching, limits.

One tiny resnet20 is trained on 16 px digits once for the module; every test serves it.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import threading
import time
import zlib

import pytest
import torch
from conftest import write_digits_folder
from fastapi.testclient import TestClient
from PIL import Image

from resnet.data import eval_transform
from resnet.data.images import ImageTooLarge, UnreadableImage, decode_image, load_image
from resnet.engine import TrainConfig, train
from resnet.engine.inference import TorchClassifier, predict_paths
from resnet.serve import ServeSettings, create_app

RUN = "digits-run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(runs folder, a few held-out image paths): resnet20 trained 2 epochs on 16 px digits."""
    root = tmp_path_factory.mktemp("serve")
    digits = write_digits_folder(root / "digits", per_class=12)
    cfg = TrainConfig.from_dict(
        {
            "model": {"name": "resnet20"},
            "data": {"source": str(digits), "batch_size": 32},
            "optim": {"lr": 0.05},
            "run": {"epochs": 2, "out": str(root / "runs" / RUN), "seed": 0},
        }
    )
    train(cfg, progress=False, log=None)
    paths = sorted((digits / "val").rglob("*.png"))[::4][:6]
    return root / "runs", paths


def serve(runs, **options) -> TestClient:
    """A test client (use it in `with`, so the lifespan loads the models)."""
    options.setdefault("backend", "eager")
    options.setdefault("warm", False)
    return TestClient(create_app(ServeSettings(runs=runs, **options)))


def files_of(paths):
    return [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_multipart_and_base64_give_the_top1_of_resnet_predict(trained):
    runs, paths = trained
    expected = predict_paths(TorchClassifier.from_checkpoint(runs / RUN), paths, top_k=3)
    with serve(runs, models=[str(runs / RUN)]) as c:
        a = c.post("/v1/predict", files=files_of(paths), params={"top_k": 3})
        b = c.post("/v1/predict", json={"images": [b64(p) for p in paths], "top_k": 3})
    assert a.status_code == b.status_code == 200, a.text
    assert a.json()["model"] == RUN
    for want, got_a, got_b in zip(
        expected, a.json()["predictions"], b.json()["predictions"], strict=True
    ):
        top = want["predictions"][0]
        assert got_a["top_k"][0]["label"] == got_b["top_k"][0]["label"] == top["class"]
        assert got_a["top_k"][0]["prob"] == pytest.approx(top["probability"], abs=1e-5)
        assert len(got_a["top_k"]) == 3 and "cam_png" not in got_a


def test_a_run_is_served_by_name_without_being_named_at_start_and_cam_is_a_png(trained):
    runs, paths = trained
    with serve(runs) as c:
        listed = c.get("/v1/models").json()
        assert {"name": RUN, "source": str(runs / RUN), "loaded": False} in listed
        r = c.post("/v1/predict", files=files_of(paths[:2]), data={"model": RUN, "cam": "true"})
        assert r.status_code == 200, r.text
        for p in r.json()["predictions"]:
            png = base64.b64decode(p["cam_png"])
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert Image.open(io.BytesIO(png)).size == (16, 16)
        one = c.get(f"/v1/models/{RUN}").json()
    assert one["loaded"] and one["backend"] == "eager" and one["cam"]
    assert one["task"] == "classify" and one["input_size"] == [1, 16, 16]
    assert len(one["classes"]) == 10 and one["params"] > 200_000


def test_bad_requests_get_json_4xx_and_the_server_keeps_serving(trained):
    runs, paths = trained
    good = paths[0].read_bytes()
    big = io.BytesIO()
    Image.new("L", (400, 400)).save(big, format="PNG")
    cases = [
        (dict(json={"images": [b64(paths[0])], "model": "nope"}), 404),
        (dict(json={"images": [b64(paths[0])], "model": "../etc"}), 404),
        (dict(json={"images": []}), 422),
        (dict(files=[("other", ("a.png", good, "image/png"))]), 422),
        (dict(json={"images": ["not base64!!"]}), 422),
        (dict(files=[("files", ("a.txt", b"hello, not an image", "text/plain"))]), 415),
        (dict(json={"images": [base64.b64encode(b"GIF89a garbage").decode()]}), 415),
        (dict(files=[("files", ("bomb.png", png_claiming(50_000, 50_000), "image/png"))]), 413),
        (dict(files=[("files", ("big.png", big.getvalue(), "image/png"))]), 413),
        (dict(files=files_of(paths[:1]), params={"top_k": 0}), 422),
        (dict(files=files_of(paths[:1]), params={"top_k": 10**6}), 422),
        (dict(json={"images": [b64(paths[0])], "top_k": 10**6}), 422),
        (dict(files=files_of(paths[:1]), data={"top_k": "many"}), 422),
        (dict(json={"images": [b64(paths[0])], "colour": "red"}), 422),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 422),
        (dict(content=good, headers={"content-type": "image/png"}), 415),
        (dict(files=[("files", ("x.png", b"\0" * 120_000, "image/png"))]), 413),
    ]
    with serve(runs, models=[str(runs / RUN)], max_pixels=100_000, predict_body_mb=0.1) as c:
        for request, status in cases:
            r = c.post("/v1/predict", **request)
            assert r.status_code == status, (request, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json")
            assert isinstance(r.json()["error"], str) and r.json()["error"]
            assert c.get("/livez").status_code == 200
        clamped = c.post("/v1/predict", files=files_of(paths[:1]), params={"top_k": 1000})
        assert clamped.status_code == 200 and len(clamped.json()["predictions"][0]["top_k"]) == 10
        assert c.get("/v1/models/nope").status_code == 404


def _batch_sizes(metrics_text: str) -> tuple[float, float]:
    count = float(re.search(r"^resnet_batch_size_count (\S+)", metrics_text, re.M).group(1))
    total = float(re.search(r"^resnet_batch_size_sum (\S+)", metrics_text, re.M).group(1))
    return count, total


def test_concurrent_requests_are_batched_and_equal_one_by_one(trained):
    runs, paths = trained
    clf = TorchClassifier.from_checkpoint(runs / RUN)
    alone = [torch.softmax(clf(one_input(clf, p)), dim=1)[0] for p in paths]  # batch of 1
    answers: dict[int, dict] = {}
    with serve(runs, models=[str(runs / RUN)], max_batch=8, max_wait_ms=200) as c:

        def ask(i):
            r = c.post("/v1/predict", files=files_of([paths[i % len(paths)]]), data={"top_k": "10"})
            answers[i] = r.json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        count, total = _batch_sizes(c.get("/metrics").text)
    assert len(answers) == 12 and count >= 1 and total == 12 and count < 12, (count, total)
    for i, answer in answers.items():
        probs = torch.zeros(10)
        for row in answer["predictions"][0]["top_k"]:
            probs[row["index"]] = row["prob"]
        assert torch.allclose(probs, alone[i % len(paths)], atol=1e-5)


def one_input(clf, path) -> torch.Tensor:
    """`path` preprocessed as the checkpoint says, as a batch of one."""
    pre = clf.preprocessing
    return eval_transform(pre)(load_image(path, pre["in_chans"]))[None]


def test_a_full_queue_answers_503_with_retry_after(trained):
    runs, paths = trained
    with serve(runs, models=[str(runs / RUN)], max_queue=1, max_wait_ms=400) as c:
        first = {}
        t = threading.Thread(
            target=lambda: first.update(r=c.post("/v1/predict", files=files_of(paths[:1])))
        )
        t.start()
        time.sleep(0.15)  # the first image waits in the queue for a batch-mate
        r = c.post("/v1/predict", files=files_of(paths[1:2]))
        t.join()
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "busy" in r.json()["error"]
        assert first["r"].status_code == 200
        assert c.post("/v1/predict", files=files_of(paths[:2])).status_code == 503  # 2 > queue
        assert c.post("/v1/predict", files=files_of(paths[:1])).status_code == 200


def test_models_and_readiness_report_the_backend_auto_chose(trained):
    runs, paths = trained
    with serve(runs, models=[f"digits={runs / RUN}"], backend="auto", warm=True) as c:
        assert c.get("/readyz").json() == {"status": "ready", "models": ["digits"]}
        listed = c.get("/v1/models").json()
        r = c.post("/v1/predict", json={"images": [b64(paths[0])], "top_k": 1})
    first = listed[0]
    assert first["name"] == "digits" and first["backend"] in ("eager", "onnxruntime", "openvino")
    choice = first["backend_choice"]
    assert choice["chosen_by"] == "auto" and "eager" in choice["timings_ms"]
    for runtime in ("onnxruntime", "openvino"):  # both installed, both fp32: both timed
        assert runtime in choice["timings_ms"], choice["rejected"]
    assert first["backend"] == min(choice["timings_ms"], key=choice["timings_ms"].get)
    assert first["max_batch"] == 32 and first["max_wait_ms"] == 5.0
    assert {"name": RUN, "source": str(runs / RUN), "loaded": False} in listed
    assert r.status_code == 200 and r.json()["model"] == "digits"


def test_decode_image_refuses_bombs_before_reading_pixels_and_turns_exif(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="49,000,000 pixels, over the limit of 40,000,000"):
        decode_image(png_claiming(7_000, 7_000))
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        decode_image(png_claiming(50_000, 50_000))  # Pillow refuses it first
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(UnreadableImage):
        decode_image(b"\x89PNG\r\n\x1a\n truncated")
    img = Image.new("RGB", (4, 2), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert decode_image(tmp_path / "turned.jpg").size == (2, 4)
    assert load_image(tmp_path / "turned.jpg", 3).shape == (3, 4, 2)
    with pytest.raises(ImageTooLarge):
        load_image(tmp_path / "turned.jpg", 3, max_pixels=4)
