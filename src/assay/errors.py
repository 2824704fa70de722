"""Every error assay raises on purpose, each carrying its HTTP status and code.

The web layer maps them to one JSON shape in one place
(``{"error": {"code", "message", "field"}}``); the CLI prints the message and
exits non-zero. Anything that is not an ``AssayError`` is a bug (5xx).
"""

from __future__ import annotations

from typing import Any


class AssayError(Exception):
    """Base class: a problem assay understood and can name."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class SettingsError(AssayError):
    code = "bad_setting"


class SpecError(AssayError):
    """A model spec that cannot work (unknown key, missing column, bad value)."""

    code = "bad_spec"


class DataError(AssayError):
    """A data set that cannot be used (empty, duplicate ids, NaN where not allowed...)."""

    code = "bad_data"


class InvalidInput(AssayError):
    """A request's content is wrong: types, missing or unknown features, NaN/inf."""

    status = 422
    code = "invalid_input"


class MalformedRequest(AssayError):
    status = 400
    code = "malformed_request"


class NotFound(AssayError):
    status = 404
    code = "not_found"


class Unauthorized(AssayError):
    status = 401
    code = "unauthorized"


class Forbidden(AssayError):
    status = 403
    code = "forbidden"


class Conflict(AssayError):
    status = 409
    code = "conflict"


class GateFailed(Conflict):
    """A promotion refused because the spec's gates do not pass."""

    code = "gate_failed"


class PayloadTooLarge(AssayError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(AssayError):
    status = 429
    code = "too_many_requests"


class Unavailable(AssayError):
    status = 503
    code = "unavailable"


class StoreOutOfDate(AssayError):
    """The store's schema is older (or newer) than this assay's: ``assay db upgrade`` brings it up."""

    status = 503
    code = "store_out_of_date"


class ScoringTimeout(AssayError):
    status = 504
    code = "timeout"


class ArtifactError(AssayError):
    """A stored artifact is missing, truncated or does not match its recorded hash."""

    status = 500
    code = "artifact_invalid"
