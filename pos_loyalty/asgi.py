"""HTTP pieces shared by the plugin API and the central server (both FastAPI apps).

Starlette has no request-body limit of its own, hence ``BodyLimit``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_ERROR_CODES = {
    400: "malformed_json",  # Starlette could not parse the body at all
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The one error shape: ``{"error": {"code", "message", ...}}``."""
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


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
