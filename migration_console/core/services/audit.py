"""Audit rows: one per attempt, from any channel, append-only.

Every text that reaches a row may come from a hostile request (a URL segment, a
typed user name, a query parameter, a JSON field), and PostgreSQL refuses NUL in
``text`` and ``jsonb``. So each value is cleaned here, once for every channel,
before the insert: a refusal can never turn into a 500 that leaves no row.
"""

import logging
import unicodedata

from migration_console.core.models import AuditEvent
from migration_console.core.services.caller import Caller

logger = logging.getLogger("migration_console.audit")

# Control characters (NUL included), lone surrogates (not encodable as UTF-8) and
# the Unicode line/paragraph separators, which could forge lines in the log.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_MESSAGE_KEEPS = frozenset("\t\n")


def clean_text(value, *, limit: int | None = None, keep: frozenset[str] = frozenset()) -> str:
    """``value`` as storable, readable text: each unsafe character becomes a visible
    escape (``\\x00``, ``\\u2028``), so a reviewer still sees what was sent."""
    text = value if isinstance(value, str) else str(value)
    if any(unicodedata.category(char) in _UNSAFE_CATEGORIES for char in text):
        text = "".join(
            char
            if char in keep or unicodedata.category(char) not in _UNSAFE_CATEGORIES
            else _escape(char)
            for char in text
        )
    return text[:limit] if limit is not None else text


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def has_unsafe_text(value: str, *, keep: frozenset[str] = frozenset()) -> bool:
    """True when ``value`` holds a character ``clean_text`` would escape."""
    return any(
        char not in keep and unicodedata.category(char) in _UNSAFE_CATEGORIES for char in value
    )


def audit_record(
    *,
    caller: Caller,
    action: str,
    outcome: str,
    target: str = "",
    migrations: list[str] | None = None,
    message: str = "",
    run=None,
) -> AuditEvent:
    """Write the audit row of one attempt by ``caller`` (and log it)."""
    actor = clean_text(caller.actor, limit=150)
    target = clean_text(target, limit=128)
    action = clean_text(action, limit=32)
    migrations = [clean_text(version, limit=200) for version in migrations or []]
    event = AuditEvent.objects.create(
        actor=actor,
        user=caller.user if getattr(caller.user, "pk", None) else None,
        client_ip=caller.client_ip or None,
        channel=caller.channel,
        target=target,
        action=action,
        outcome=outcome,
        migrations=migrations,
        message=clean_text(message, keep=_MESSAGE_KEEPS),
        token_prefix=clean_text(caller.token_prefix, limit=16),
        run=run,
    )
    logger.info(
        "audit actor=%s channel=%s action=%s target=%s outcome=%s migrations=%s",
        actor,
        caller.channel,
        action,
        target,
        outcome,
        ",".join(migrations),
    )
    return event
