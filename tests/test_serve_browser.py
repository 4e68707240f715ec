"""The web app of `resnet serve` in a real headless browser, against the real server.

Debian's `chromium` is driven by Playwright's Python package through `executable_path` (never
`playwright install`, which downloads a browser). The server runs with uvicorn on 127.0.0.1 in a
background thread. One walk through the app: upload a ZIP of digits, see the class counts, train
resnet20 for two epochs, watch the curve grow and the run finish, open the run page (confusion
matrix, per-class table), drop an image on Predict and read the top-1 label and the Grad-CAM
image. Each page is saved as a PNG under the test's tmp folder; with RESNET_SCREENSHOTS=DIR
(e.g. docs/figures/serve) a 256-colour copy goes there too.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import write_digits_folder
from fastapi.testclient import TestClient
from PIL import Image

from resnet.serve import ServeSettings, create_app
from resnet.serve.auth import COOKIE

STATIC = Path(__file__).resolve().parents[1] / "src" / "resnet" / "serve" / "static"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen
TIMEOUT_MS = 120_000  # the longest wait for one thing (the training run)
# A reference that would make the page fetch from elsewhere: a URL with a scheme, a
# protocol-relative URL in an attribute or url(), an @import.
EXTERNAL = re.compile(r"https?://|[\"'(]//[A-Za-z0-9]|//cdn|@import", re.IGNORECASE)


def _settings(tmp_path: Path, **kw) -> ServeSettings:
    return ServeSettings(
        runs=tmp_path / "runs",
        datasets=tmp_path / "datasets",
        warm=False,
        zip_members=500,
        zip_total_mb=64,
        **kw,
    )


def test_static_files_name_nothing_outside_the_server():
    files = sorted(STATIC.iterdir())
    assert {f.name for f in files} >= {"index.html", "app.js", "app.css"}
    for f in files:
        found = EXTERNAL.findall(f.read_text(encoding="utf-8"))
        assert not found, f"{f.name} refers outside the server: {found}"


def test_page_and_assets_are_served_with_a_strict_policy(tmp_path):
    with TestClient(create_app(_settings(tmp_path))) as c:
        page = c.get("/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/static/app.css").headers["content-type"].startswith("text/css")
        for bad in ("nope.js", "..%2Fapp.py", "__init__.py", "app.js.map"):
            r = c.get(f"/static/{bad}")
            assert r.status_code == 404 and "error" in r.json()


def test_page_needs_the_token_and_keeps_it_in_a_strict_cookie(tmp_path):
    with TestClient(create_app(_settings(tmp_path, token="s3cret"))) as c:
        assert c.get("/").status_code == 401
        assert c.get("/?token=wrong").status_code == 403
        assert c.get("/v1/runs").status_code == 401
        r = c.get("/?token=s3cret", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=s3cret") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        c.cookies.set(COOKIE, "s3cret")
        assert c.get("/").status_code == 200  # the cookie alone now opens the page ...
        assert c.get("/v1/runs").status_code == 200  # ... and the API the page calls
        c.cookies.set(COOKIE, "old")
        r = c.get("/?token=s3cret", follow_redirects=False)  # the address replaces a stale cookie
        assert r.status_code == 303 and "s3cret" in r.headers["set-cookie"]


# -- the browser walk -----------------------------------------------------------------------
@contextmanager
def _serve(settings: ServeSettings):
    """The real app under uvicorn on a free 127.0.0.1 port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=5)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def chromium() -> str:
    """Debian's chromium, or a skip that says how to get it."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM


@pytest.fixture
def server(chromium, tmp_path):
    """The server the browser walk uses (started only when there is a browser)."""
    with _serve(_settings(tmp_path)) as url:
        yield url


@pytest.fixture
def page(chromium):
    """A Chromium page at a laptop's size; fails the test on any uncaught page error."""
    from playwright import sync_api

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--disable-gpu"])
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        pg = context.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        context.close()
        browser.close()
    assert not errors, f"errors in the page: {errors}"


def _shot(page, tmp_path: Path, name: str) -> None:
    """Saves the page as `name`.png under tmp_path (and RESNET_SCREENSHOTS when set)."""
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if out := os.environ.get("RESNET_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:  # 256 colours: the docs' copy at ~40 % of the bytes
            small = im.convert("RGB").quantize(
                256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
            )
            small.save(Path(out) / path.name, optimize=True)


def _loaded(img) -> None:
    """Waits for an <img> to have loaded a picture (the page's CSP forbids string eval, so no
    wait_for_function)."""
    from playwright.sync_api import expect

    expect(img).to_have_js_property("complete", True)
    assert img.evaluate("i => i.naturalWidth") > 0


def _zip_digits(tmp_path: Path) -> bytes:
    folder = write_digits_folder(tmp_path / "digits", per_class=20, size=16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(folder.parent))
    return buf.getvalue()


def test_browser_page_with_a_token(page, tmp_path):
    """With --token the page opens once from /?token=..., then works from its cookie alone."""
    from playwright.sync_api import expect

    with _serve(_settings(tmp_path, token="s3cret")) as url:
        assert page.goto(f"{url}/").status == 401
        page.goto(f"{url}/?token=s3cret")
        page.wait_for_url(f"{url}/")  # the token left the address bar
        page.goto(f"{url}/#/runs")
        expect(page.locator("#view h1")).to_have_text("Runs")  # /v1/runs answered the cookie
        expect(page.locator("#error")).to_be_hidden()
        page.context.clear_cookies()
        assert page.reload().status == 401


def test_browser_upload_train_inspect_predict(server, page, tmp_path):
    from playwright.sync_api import expect

    _upload_and_inspect(page, server, tmp_path)
    run_id = _train(page, tmp_path)
    _inspect_run(page, tmp_path)
    _runs_table(page, server, run_id, tmp_path)
    _compare(page, server, run_id, tmp_path)
    _queue_stop_resume(page, server, tmp_path)
    _predict(page, server, run_id, tmp_path)
    page.goto(f"{server}/#/runs/no-such-run")  # an API error is shown, not swallowed
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-text")).to_contain_text("no run")


def _upload_and_inspect(page, server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/")
    expect(page.locator("#datasets tbody tr").first).to_be_visible()
    page.set_input_files(
        "#dataset-file",
        files=[
            {"name": "digits.zip", "mimeType": "application/zip", "buffer": _zip_digits(tmp_path)}
        ],
    )
    page.click("#dataset-upload button[type=submit]")
    page.wait_for_url(re.compile(r"#/datasets/digits$"))
    rows = page.locator("#class-counts tbody tr")
    expect(rows).to_have_count(10)
    expect(rows.first.locator("td.count")).to_have_text("20")  # 16 train + 4 val
    expect(rows.first.locator(".thumbs img").first).to_be_visible()
    expect(page.locator("#unreadable")).to_contain_text("Every image could be read")
    _shot(page, tmp_path, "dataset")
    page.goto(f"{server}/#/datasets")
    expect(page.locator('#datasets tr[data-dataset="digits"]')).to_be_visible()
    _shot(page, tmp_path, "datasets")


def _train(page, tmp_path: Path) -> str:
    from playwright.sync_api import expect

    page.click("#datasets tr[data-dataset=digits] a")
    page.click("#train-on")
    page.wait_for_url(re.compile(r"#/train\?dataset=digits"))
    expect(page.locator("select[name=dataset]")).to_have_value("digits")
    page.fill("input[name=model]", "resnet20")
    # The architecture's size, as `resnet models` gives it (269,722 parameters for 10 classes).
    expect(page.locator("#model-info")).to_contain_text("0.27 M parameters")
    page.fill("input[name=epochs]", "2")
    page.fill("input[name=batch_size]", "16")
    page.select_option("select[name=augment]", "flip")
    _shot(page, tmp_path, "train")
    page.click("#start")
    page.wait_for_url(re.compile(r"#/runs/[^/]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    chart = page.locator("#chart-acc")
    expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=TIMEOUT_MS)
    expect(page.locator("#run-status")).to_have_attribute(
        "data-status", "finished", timeout=TIMEOUT_MS
    )
    expect(page.locator("#chart-acc")).to_have_attribute("data-points", "2")
    expect(page.locator("#log")).to_contain_text("epoch 2/2")
    expect(page.locator("#progress")).to_have_js_property("value", 1)
    return run_id


def _inspect_run(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    matrix = page.locator('#results img[data-file="confusion_matrix.png"]')
    expect(matrix).to_be_visible()
    _loaded(matrix)
    expect(page.locator("#results table.per-class tbody tr")).to_have_count(10)
    expect(page.locator("#downloads a", has_text="best.pt")).to_be_visible()
    expect(page.locator("#misclassified figure, #misclassified p").first).to_be_visible()
    expect(page.locator("#config")).to_contain_text('"resnet20"')
    page.click('#downloads button:has-text("Export OpenVINO")')
    links = page.locator("#export-result a")
    expect(links).to_have_count(2, timeout=120_000)  # the IR: .xml + .bin, parity checked
    expect(links.first).to_have_text("best.openvino.xml")
    expect(page.locator("#export-result .parity")).to_contain_text("parity ok")
    _shot(page, tmp_path, "run")


def _runs_table(page, server: str, run_id: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/#/runs")
    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("finished")
    page.click('#runs th[data-key="best_acc"]')
    expect(page.locator('#runs th[data-key="best_acc"]')).to_have_attribute("data-dir", "desc")
    _shot(page, tmp_path, "runs")


def _compare(page, server: str, first: str, tmp_path: Path) -> None:
    """A second, shorter run (started over the API, as any client may), then both side by side."""
    from playwright.sync_api import expect

    config = {
        "model": {"name": "resnet20"},
        "data": {"source": "digits", "batch_size": 16, "augment": "none"},
        "run": {"epochs": 1},
    }
    r = httpx.post(f"{server}/v1/runs", json={"config": config, "name": "digits-short"})
    assert r.status_code == 202, r.text
    page.goto(f"{server}/#/runs/digits-short")
    expect(page.locator("#run-status")).to_have_attribute(
        "data-status", "finished", timeout=TIMEOUT_MS
    )
    page.goto(f"{server}/#/runs")
    for run_id in (first, "digits-short"):
        page.check(f'#runs tr[data-run="{run_id}"] input[type=checkbox]')
    page.click("#compare")
    expect(page.locator(".compare section.card")).to_have_count(2)
    expect(page.locator("#config-diff")).to_contain_text("run.epochs")
    expect(page.locator(".compare table.per-class")).to_have_count(2)
    _shot(page, tmp_path, "compare")


def _queue_stop_resume(page, server: str, tmp_path: Path) -> None:
    """A long run and one queued behind it; Stop, then Resume, from the run page."""
    from playwright.sync_api import expect

    data = {"source": "digits", "batch_size": 16, "augment": "none"}
    for name, epochs in (("digits-long", 40), ("digits-next", 1)):
        body = {"config": {"model": {"name": "resnet20"}, "data": data, "run": {"epochs": epochs}}}
        assert httpx.post(f"{server}/v1/runs", json=body | {"name": name}).status_code == 202
    page.goto(f"{server}/#/runs/digits-next")
    status = page.locator("#run-status")
    if status.get_attribute("data-status") == "queued":  # unless the long run already ended
        expect(page.locator("#queue-position")).to_contain_text("position 1")
        _shot(page, tmp_path, "queued")
    page.goto(f"{server}/#/runs/digits-long")
    expect(page.locator("#chart-acc")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]"), timeout=TIMEOUT_MS
    )
    _shot(page, tmp_path, "live")
    page.click("#stop")
    expect(status).to_have_attribute("data-status", "stopped", timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("run stopped")
    expect(page.locator("#downloads a", has_text="last.pt")).to_be_visible()
    page.click("#resume")  # queued behind digits-next, or running once it is done
    expect(status).to_have_attribute("data-status", "running", timeout=TIMEOUT_MS)
    expect(page.locator("#log")).to_contain_text("resumed")
    page.click("#stop")
    expect(status).to_have_attribute("data-status", "stopped", timeout=TIMEOUT_MS)


def _predict(page, server: str, run_id: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/#/predict")
    page.select_option("select[name=model]", run_id)
    image = next((tmp_path / "digits" / "val" / "digit3").glob("*.png")).read_bytes()
    page.evaluate(  # a drop of a real file, as a person dragging it from the desktop makes
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/png" }));
            const drop = document.querySelector("#drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { dataTransfer: dt, bubbles: true, cancelable: true };
                drop.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [base64.b64encode(image).decode(), "three.png"],
    )
    card = page.locator(".prediction").first
    expect(card.locator(".top1")).to_have_text(re.compile(r"^digit\d$"), timeout=60_000)
    expect(card.locator("ol.topk li")).to_have_count(5)
    _loaded(card.locator("img.cam"))
    _shot(page, tmp_path, "predict")
