"""The optional bearer token: on every API call, the page and the event streams."""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import ApiError

COOKIE = "resnet_token"


def presented_token(request: Request) -> str | None:
    """The token a request carries: `Authorization: Bearer`, else the page's cookie, else a
    `?token=` query (EventSource and the first page load cannot set headers)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE) or request.query_params.get("token")


def check_token(request: Request) -> None:
    """Refuses a request without the configured token (401) or with a wrong one (403)."""
    expected = request.app.state.settings.token
    if not expected:
        return
    given = presented_token(request)
    if not given:
        raise ApiError(
            401,
            "this server needs a token: Authorization: Bearer <token>",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "wrong token")
