"""The web app: `/` (one page, hash routes) and its assets under `/static/`, all from the package.

The page talks only to the public `/v1` API, like every other client. When the server has a token,
the page needs it too: open `/?token=...` once; the answer sets the `resnet_token` cookie
(HttpOnly, SameSite=Strict) and redirects to `/`, so the token leaves the address bar and every
later call of the page (fetch, EventSource) carries the cookie.
"""

from __future__ import annotations

import hmac
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..auth import COOKIE, presented_token
from ..errors import ApiError

router = APIRouter(include_in_schema=False)

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from this origin; nothing from a CDN (the page works offline).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
COOKIE_MAX_AGE = 30 * 24 * 3600
TOKEN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>resnet serve: token needed</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main class="narrow"><h1>resnet serve</h1><p class="banner">{message}</p>
<p>Open <code>/?token=&lt;token&gt;</code> once (the token the server was started with:
<code>--token</code> or <code>RESNET_SERVE_TOKEN</code>); this browser then keeps it in a cookie.
</p></main></body></html>"""


def static_file(name: str) -> bytes:
    """The bytes of the packaged asset `name` (a plain file name in `serve/static/`), else 404."""
    folder = resources.files("resnet.serve").joinpath("static")
    names = {entry.name for entry in folder.iterdir() if entry.is_file()}
    if name not in names:  # only the listed files: no path ever leaves the folder
        raise ApiError(404, f"no such file: {name}")
    return folder.joinpath(name).read_bytes()


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


@router.get("/")
def index(request: Request) -> Response:
    """The web app; with a token configured, only for a browser that presents it."""
    expected = request.app.state.settings.token
    if expected:
        # a token in the address wins over an old cookie: opening /?token=... replaces it
        given = request.query_params.get("token") or presented_token(request)
        if not given:
            return _token_page(401, "This server needs a token.")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _token_page(403, "Wrong token.")
        if request.query_params.get("token"):  # keep it in a cookie, not in the address bar
            response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
            response.set_cookie(
                COOKIE,
                given,
                max_age=COOKIE_MAX_AGE,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path="/",
            )
            return response
    return HTMLResponse(static_file("index.html"), headers=SECURITY_HEADERS)


def _token_page(status: int, message: str) -> HTMLResponse:
    return HTMLResponse(TOKEN_PAGE.format(message=message), status, headers=SECURITY_HEADERS)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """A packaged asset of the page (HTML, JS, CSS); the same for every visitor, no token."""
    media_type = MEDIA_TYPES.get(_suffix(name))
    if media_type is None:
        raise ApiError(404, f"no such file: {name}")
    return Response(static_file(name), media_type=media_type, headers=SECURITY_HEADERS)
