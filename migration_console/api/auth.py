"""Who is calling: a Bearer token, or else a session with CSRF for unsafe methods."""

from dataclasses import dataclass

from django.middleware.csrf import CsrfViewMiddleware

from accounts.models import ApiToken
from accounts.tokens import TokenError, token_authenticate
from migration_console.api.errors import forbidden, unauthorized

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


@dataclass
class Credentials:
    user: object | None = None
    token: ApiToken | None = None
    via: str = ""  # "token" | "session"


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF checks, returning the reason instead of an HTML 403."""

    def _reject(self, request, reason):
        return reason


def csrf_failure(request) -> str | None:
    check = _CsrfCheck(lambda _request: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})


def authenticate(request, credentials: Credentials) -> None:
    """Fill ``credentials`` from the request, or raise ApiError 401/403.

    A request carrying an Authorization header is judged by that header alone,
    whatever session cookie it also has.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, raw = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise unauthorized("use Authorization: Bearer <token>")
        raw = raw.strip()
        if not raw:
            raise unauthorized("missing token after Bearer")
        try:
            token = token_authenticate(raw=raw)
        except TokenError as exc:
            if exc.token is not None:
                credentials.token = exc.token
                credentials.user = exc.token.user
            raise unauthorized(exc.reason) from None
        credentials.user, credentials.token, credentials.via = token.user, token, "token"
        return
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise unauthorized("authentication required: Authorization: Bearer <token>")
    credentials.user, credentials.via = user, "session"
    if request.method not in SAFE_METHODS:
        reason = csrf_failure(request)
        if reason:
            raise forbidden(f"CSRF check failed: {reason}")
