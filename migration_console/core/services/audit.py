"""Audit rows: one per attempt, from any channel, append-only."""

import logging

from migration_console.core.models import AuditEvent
from migration_console.core.services.caller import Caller

logger = logging.getLogger("migration_console.audit")


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
    event = AuditEvent.objects.create(
        actor=caller.actor[:150],
        user=caller.user if getattr(caller.user, "pk", None) else None,
        client_ip=caller.client_ip or None,
        channel=caller.channel,
        target=target[:63],
        action=action,
        outcome=outcome,
        migrations=migrations or [],
        message=message,
        token_prefix=caller.token_prefix,
        run=run,
    )
    logger.info(
        "audit actor=%s channel=%s action=%s target=%s outcome=%s migrations=%s",
        caller.actor,
        caller.channel,
        action,
        target,
        outcome,
        ",".join(migrations or []),
    )
    return event
