"""HTTP pieces shared by the plugin API and the central server (both FastAPI apps).

Starlette has no request-body limit of its own, hence ``BodyLimit``; its last-resort error
handler re-raises to the server, which logs the traceback, hence ``InternalErrors``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_ERROR_CODES = {
    400: "malformed_json",  # Starlette could not parse the body at all
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` to branch on and a ``message`` to show. Some
    refusals carry more (``minimum_not_met``: ``missing``, the amount still missing)."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorOut(BaseModel):
    """Every refusal and failure of the API has this shape."""

    error: ErrorDetail


def refusal(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for an answer in the one error shape."""
    return {"model": ErrorOut, "description": description}


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The one error shape: ``{"error": {"code", "message", ...}}``."""
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


def http_error(exc: StarletteHTTPException, codes: dict[int, str]) -> JSONResponse:
    """Starlette's own refusals (404 no such route, 405, 413) in the one error shape, with
    the headers they carry (``Allow`` on a 405, as RFC 9110 asks)."""
    response = error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


class InternalErrors:
    """Answers an exception that no handler took with a JSON 500 and logs one line naming
    the route and the exception's type, never its message or traceback.

    Starlette's handler for ``Exception`` answers too, but then re-raises to the server,
    which logs the whole traceback with the exception's message and arguments; at the till a
    message can hold what a cashier scanned, a payment card's number included (invariant 10:
    never logged). Add it last (outermost of the app's middleware): what it catches never
    reaches Starlette's handler.
    """

    def __init__(
        self, app: ASGIApp, *, message: str, log: logging.Logger, traceback: bool = False
    ) -> None:
        self.app = app
        self.message = message
        self.log = log
        # The central server's requests carry no scans: its log keeps the traceback (once).
        self.traceback = traceback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # noqa: BLE001 - the last resort: answered and logged here
            route = getattr(scope.get("route"), "path", "?")
            self.log.error(
                "internal error in %s: %s",
                route,
                type(exc).__name__,
                exc_info=exc if self.traceback else None,
            )
            if not started:
                await error(500, "internal_error", self.message)(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether announced or streamed.

    A streamed body that grows too large raises ``HTTPException(413)`` from ``receive``: it
    passes FastAPI's body parsing untouched and reaches the app's HTTPException handler,
    which answers with ``HTTP_ERROR_CODES[413]``.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"Request bodies are limited to {self.limit} bytes."
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await error(413, "body_too_large", message)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, message)
            return received

        await self.app(scope, limited, send)
