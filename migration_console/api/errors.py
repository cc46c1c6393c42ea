"""ApiError: an answer the API gives instead of a result, always JSON."""

from migration_console.core.models import AuditEvent


class ApiError(Exception):
    """Raised anywhere in an endpoint; becomes ``{"error", "message", ...}`` with ``status``.

    ``outcome`` is the audit outcome when the request is recorded (denials always are).
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        outcome: str = AuditEvent.Outcome.REFUSED,
        headers: dict[str, str] | None = None,
        **extra,
    ):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.outcome = outcome
        self.headers = headers or {}
        self.extra = extra

    def as_dict(self) -> dict:
        return {"error": self.error, "message": self.message, **self.extra}


def bad_request(message: str, **extra) -> ApiError:
    return ApiError(400, "bad request", message, **extra)


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        message,
        outcome=AuditEvent.Outcome.DENIED,
        headers={"WWW-Authenticate": 'Bearer realm="migrations"'},
    )


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message, outcome=AuditEvent.Outcome.DENIED)
