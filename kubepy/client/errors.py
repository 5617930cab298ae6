"""Typed client errors, built from the API server's ``Status`` bodies.

Error tree::

    APIStatusError (status, reason, message, body)
    ├── BadRequestError      400
    ├── UnauthorizedError    401
    ├── ForbiddenError       403
    ├── NotFoundError        404
    ├── ConflictError        409 reason Conflict (stale resourceVersion)
    ├── AlreadyExistsError   409 reason AlreadyExists
    ├── GoneError            410 (resourceVersion too old: re-list)
    ├── InvalidError         422 (``.causes`` name the fields)
    └── ServerError          5xx
    TransportError           the server could not be reached or the connection broke
"""

from __future__ import annotations

from typing import Any


class APIStatusError(Exception):
    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def details(self) -> dict[str, Any]:
        return (self.body or {}).get("details") or {}


class BadRequestError(APIStatusError):
    pass


class UnauthorizedError(APIStatusError):
    pass


class ForbiddenError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class AlreadyExistsError(APIStatusError):
    pass


class GoneError(APIStatusError):
    pass


class InvalidError(APIStatusError):
    @property
    def causes(self) -> list[dict[str, str]]:
        return list(self.details.get("causes") or [])


class ServerError(APIStatusError):
    pass


class TransportError(Exception):
    """A connection failure: refused, reset, TLS, or a stream cut short."""


_BY_CODE: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    410: GoneError,
    422: InvalidError,
}


def error_from_status(status: int, body: Any, text: str = "") -> APIStatusError:
    """The typed error for an HTTP status and its (Status) body, if any."""
    doc = body if isinstance(body, dict) else None
    code = int((doc or {}).get("code") or status)
    reason = str((doc or {}).get("reason") or "")
    message = str((doc or {}).get("message") or text or reason or f"HTTP {code}")
    cls: type[APIStatusError]
    if code == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif code >= 500:
        cls = ServerError
    else:
        cls = _BY_CODE.get(code, APIStatusError)
    return cls(code, reason or _DEFAULT_REASON.get(code, ""), message, doc)


_DEFAULT_REASON = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                   409: "Conflict", 410: "Expired", 422: "Invalid", 500: "InternalError"}
