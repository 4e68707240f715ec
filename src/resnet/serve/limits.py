"""Request body limits, enforced while the body streams in (413 past the limit)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError


class BodyLimitMiddleware:
    """Refuses bodies over a per-path limit: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, limit_for):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Checks the declared length, then counts the bytes as they arrive."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(413, f"request body over the limit of {limit / 2**20:.0f} MiB")
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(ApiError):
    """Raised while reading a body past its limit (a JSON 413 wherever it is caught)."""


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"request body over the limit of {limit / 2**20:.0f} MiB"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
