"""Errors the domain raises: a stable snake_case code and a sentence for a person."""

from __future__ import annotations


class DomainError(Exception):
    """A refused request. ``code`` is stable (API clients match on it); ``message`` is human.

    Adapters map it to HTTP 4xx / a CLI exit code; it never carries a traceback to a cashier.
    """

    status = 422

    def __init__(self, code: str, message: str, **detail: int | str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail  # extra JSON fields for the client, e.g. {"missing": 230}


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409
