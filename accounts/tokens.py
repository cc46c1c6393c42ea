"""API tokens: create (shown once), authenticate, revoke.

A token reads ``mc_<8 hex>_<43 url-safe chars>``. Its first 11 characters are
the prefix, stored in clear to recognise it in lists and audit rows; the whole
token is stored only as a SHA-256 hash (it carries 256 random bits, so a slow
password hash would add nothing but latency).
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiToken

TOKEN_PREFIX = "mc_"  # noqa: S105 - a marker, not a secret
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
TOKEN_RE = re.compile(r"^mc_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")
PREFIX_RE = re.compile(r"^(mc_)?[0-9a-f]{8}$")
# last_used_at is written at most this often per token, not on every request.
LAST_USED_GRANULARITY = timedelta(seconds=30)


class TokenError(Exception):
    """A token that cannot authenticate; ``reason`` is safe to show the caller."""

    def __init__(self, reason: str, token: ApiToken | None = None):
        super().__init__(reason)
        self.reason = reason
        self.token = token


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str  # shown once, never stored


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return bool(TOKEN_RE.match(value))


def _audit(caller, action: str, token: ApiToken, message: str) -> None:
    """The audit row of a token's creation or revocation (the audit review lists it)."""
    if caller is None:
        return
    from migration_console.core.models import AuditEvent
    from migration_console.core.services.audit import audit_record

    audit_record(
        caller=caller,
        action=action,
        outcome=AuditEvent.Outcome.SUCCESS,
        message=f"API token {token.prefix} of {token.user.get_username()}: {message}",
    )


def token_create(
    *, user, name: str = "", expires_in: timedelta | None = None, caller=None
) -> IssuedToken:
    """A new token for ``user``; the raw value is in the result and nowhere else.
    ``caller`` (who asked, core.services.caller.Caller): the creation is audited."""
    if not user.is_active:
        raise ValueError(f"user {user.get_username()!r} is not active")
    expires_at = timezone.now() + expires_in if expires_in is not None else None
    for _attempt in range(5):
        prefix = TOKEN_PREFIX + secrets.token_hex(4)
        raw = f"{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user=user,
                    name=name[:100],
                    prefix=prefix,
                    token_hash=token_hash(raw),
                    expires_at=expires_at,
                )
        except IntegrityError:  # a prefix collision: draw again
            continue
        expiry = f"expires {expires_at:%Y-%m-%d %H:%M UTC}" if expires_at else "never expires"
        _audit(caller, "token_create", token, f"created ({name or 'no name'}; {expiry})")
        return IssuedToken(token=token, raw=raw)
    raise RuntimeError("could not draw a unique token prefix")


def token_authenticate(*, raw: str) -> ApiToken:
    """The token's record (with its user) if ``raw`` may authenticate, else TokenError."""
    if not looks_like_token(raw):
        raise TokenError("invalid token")
    token = ApiToken.objects.select_related("user").filter(prefix=raw[:PREFIX_LENGTH]).first()
    if token is None or not hmac.compare_digest(token.token_hash, token_hash(raw)):
        raise TokenError("invalid token")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenError("token revoked", token)
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenError("token expired", token)
    if not token.user.is_active:
        raise TokenError("user is not active", token)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_GRANULARITY:
        # A queryset update: no model signal, so no auditlog entry per request.
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_find(*, token_or_prefix: str) -> ApiToken | None:
    """The token named by its full value or its prefix (with or without ``mc_``)."""
    value = token_or_prefix.strip()
    if looks_like_token(value):
        return ApiToken.objects.filter(token_hash=token_hash(value)).first()
    if PREFIX_RE.match(value):
        prefix = value if value.startswith(TOKEN_PREFIX) else TOKEN_PREFIX + value
        return ApiToken.objects.filter(prefix=prefix).first()
    return None


def token_revoke(*, token: ApiToken, caller=None) -> bool:
    """Revoke at once; False when it was already revoked. Recorded by django-auditlog,
    and (``caller``) in the audit review."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    _audit(caller, "token_revoke", token, "revoked")
    return True


def user_for_token(*, username: str):
    User = get_user_model()
    return User.objects.filter(**{User.USERNAME_FIELD: username}).first()
