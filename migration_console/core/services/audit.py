"""Audit rows: one per attempt, from any channel, append-only."""

import logging

from migration_console.core.models import AuditEvent

logger = logging.getLogger("migration_console.audit")


def audit_record(
    *,
    actor: str,
    channel: str,
    action: str,
    outcome: str,
    target: str = "",
    user=None,
    client_ip: str | None = None,
    migrations: list[str] | None = None,
    message: str = "",
    token_prefix: str = "",
    run=None,
) -> AuditEvent:
    event = AuditEvent.objects.create(
        actor=actor[:150],
        user=user if getattr(user, "pk", None) else None,
        client_ip=client_ip or None,
        channel=channel,
        target=target[:63],
        action=action,
        outcome=outcome,
        migrations=migrations or [],
        message=message,
        token_prefix=token_prefix,
        run=run,
    )
    logger.info(
        "audit actor=%s channel=%s action=%s target=%s outcome=%s migrations=%s",
        actor,
        channel,
        action,
        target,
        outcome,
        ",".join(migrations or []),
    )
    return event
