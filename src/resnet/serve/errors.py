"""Errors as JSON: every failure is `{"error": "..."}` with its status, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # also what the router raises for 404 and 405

from ..errors import ResNetError

log = logging.getLogger("resnet.serve")


class ApiError(ResNetError):
    """A refusal with an HTTP status, answered as `{"error": message}`: a ResNetError (the
    user's input, not a bug) that names its status; outside a request it is a one-line error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error body every failure gets."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Turns every exception into a JSON error: ours with their status, a user's mistake
    (ResNetError) as 400, validation as 422, anything else as 500 without the trace."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        return error_response(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}".lstrip(": "))

    @app.exception_handler(ResNetError)
    async def _user(request: Request, e: ResNetError):
        return error_response(400, str(e).splitlines()[0] if str(e) else "bad request")

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(e).__name__})")
