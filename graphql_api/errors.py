"""API errors: each carries one of the contract's `extensions.code` values."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, **extensions: Any):
        super().__init__(message)
        self.message = message
        self.extensions = {"code": self.code, **extensions}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    code = "FORBIDDEN"


class NotFound(ApiError):
    code = "NOT_FOUND"


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class Conflict(ApiError):
    code = "CONFLICT"


class LimitExceeded(ApiError):
    code = "LIMIT_EXCEEDED"


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"No {kind} with id {ident!r} in this workspace.", id=ident)
