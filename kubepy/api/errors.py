"""API errors, each rendered as a Kubernetes ``Status`` object.

Error tree::

    APIError (code, reason)
    ├── BadRequest        400 BadRequest
    ├── Unauthorized      401 Unauthorized
    ├── Forbidden         403 Forbidden
    ├── NotFound          404 NotFound
    ├── MethodNotAllowed  405 MethodNotAllowed
    ├── NotAcceptable     406 NotAcceptable
    ├── AlreadyExists     409 AlreadyExists
    ├── Conflict          409 Conflict
    ├── Gone              410 Expired
    ├── RequestTooLarge   413 RequestEntityTooLarge
    ├── UnsupportedMedia  415 UnsupportedMediaType
    ├── Invalid           422 Invalid (details.causes name the fields)
    ├── TooManyRequests   429 TooManyRequests
    ├── InternalError     500 InternalError
    └── ServiceUnavailable 503 ServiceUnavailable

Store errors become these at the API boundary (``raise ... from e``).
"""

from __future__ import annotations

from typing import Any

from kubepy import kinds


class APIError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The Status as Kubernetes serializes it: its field order, empty fields left out."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = status_details(self.details)
        body["code"] = self.code
        return body


# metav1.StatusDetails' fields in Go's order; all omitempty.
_DETAIL_FIELDS = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")


def status_details(details: dict[str, Any]) -> dict[str, Any]:
    out = {k: details[k] for k in _DETAIL_FIELDS if details.get(k) not in (None, "", [], 0)}
    out.update({k: v for k, v in details.items() if k not in _DETAIL_FIELDS})
    return out


class BadRequest(APIError):
    code, reason = 400, "BadRequest"


class Unauthorized(APIError):
    code, reason = 401, "Unauthorized"


class Forbidden(APIError):
    code, reason = 403, "Forbidden"


class NotFound(APIError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(APIError):
    code, reason = 405, "MethodNotAllowed"


class AlreadyExists(APIError):
    code, reason = 409, "AlreadyExists"


class Conflict(APIError):
    code, reason = 409, "Conflict"


class Gone(APIError):
    code, reason = 410, "Expired"


class RequestTooLarge(APIError):
    code, reason = 413, "RequestEntityTooLarge"


class NotAcceptable(APIError):
    code, reason = 406, "NotAcceptable"


class UnsupportedMedia(APIError):
    code, reason = 415, "UnsupportedMediaType"


class TooManyRequests(APIError):
    code, reason = 429, "TooManyRequests"


class InternalError(APIError):
    code, reason = 500, "InternalError"


class ServiceUnavailable(APIError):
    code, reason = 503, "ServiceUnavailable"


class Invalid(APIError):
    """422 with ``details.causes``: each cause is
    ``{"reason": "FieldValueRequired"|"FieldValueInvalid"|..., "message": ..., "field": "spec.containers[0].name"}``."""

    code, reason = 422, "Invalid"

    def __init__(self, kind: str, name: str, causes: list[dict[str, str]], *, group: str = "") -> None:
        super().__init__(
            kinds.invalid_message(kind, name, causes, group),
            details={"name": name, "group": group, "kind": kind, "causes": causes},
        )
        self.causes = causes

    @classmethod
    def of(cls, e: kinds.Invalid) -> Invalid:
        """The 422 for an object a kind's strategy found invalid."""
        return cls(e.kind, e.name, e.causes, group=e.group)
