"""Two-person approval of runs (SPEC "Approvals, schedules, maintenance windows").

A console or API run on a target with ``approvals: N`` is a request: a Run in state
``awaiting_approval``, bound to the plan hash its requester saw, with no job yet.
N distinct superusers other than the requester approve it; the last approval gives
it its job (now, or at its ``run_at`` / the window's next opening). One rejection
ends it. Before it runs, a changed plan ends it ``stale``; unapproved for
``MIGRATION_REQUEST_TTL`` it ends ``expired`` (``requests_expire``, a periodic task).
Every step is an audit row and a webhook message.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from migration_console.core.models import Approval, AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.control import UnknownRun
from migration_console.core.services.errors import InvalidRequest, RunRefused
from migration_console.core.services.jobs import job_defer
from migration_console.core.services.scheduling import earliest_start
from migration_console.ops.webhook import notify_request_event

COMMENT_LIMIT = 2000


def request_open_count() -> int:
    return Run.objects.filter(state=Run.State.AWAITING_APPROVAL).count()


def _same_person(run: Run, caller: Caller) -> bool:
    user_id = getattr(caller.user, "pk", None)
    if run.user_id is not None and user_id is not None:
        return run.user_id == user_id
    return run.requested_by == caller.actor


def request_record(run: Run, caller: Caller) -> None:
    """The audit row and webhook message of a new request (called by the channels
    right after ``run_start`` made ``run`` a request)."""
    message = (
        f"{run.action} #{run.pk} on {run.target} requested by {run.requested_by}: needs "
        f"{run.approvals_required} approval(s) from other superusers"
    )
    audit_record(
        caller=caller,
        action="request",
        outcome=AuditEvent.Outcome.REQUESTED,
        target=run.target,
        migrations=list(run.planned),
        message=message,
        run=run,
    )
    notify_request_event(run, "requested", caller.actor, message)


def request_decide(*, run_id: int, caller: Caller, approve: bool, comment: str = "") -> Run:
    """Approve or reject request ``run_id`` for ``caller`` (a superuser: the channels
    check that). Refused (RunRefused, audited): the requester's own decision, a second
    decision by one user, a run that is no request (any more)."""
    action = "approve" if approve else "reject"
    comment = (comment or "").strip()[:COMMENT_LIMIT]
    run = Run.objects.filter(pk=run_id).first()

    def refuse(message: str, reason: str):
        audit_record(
            caller=caller,
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            target=run.target if run else "",
            message=message,
            run=run,
        )
        raise RunRefused(message, reason=reason)

    if run is None:
        audit_record(
            caller=caller,
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            message=f"there is no run #{run_id}",
        )
        raise UnknownRun(f"there is no run #{run_id}")
    if _same_person(run, caller):
        refuse(
            f"run #{run.pk} is your own request: another superuser must {action} it",
            "own_request",
        )
    refusal = None
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.state != Run.State.AWAITING_APPROVAL:
            refusal = (
                f"run #{run.pk} is not awaiting approval (it is {locked.state})",
                "not_a_request",
            )
        elif locked.approvals.filter(username=caller.actor[:150]).exists():
            refusal = (f"you have already decided on run #{run.pk}", "already_decided")
        else:
            event, message = _decide(locked, caller, approve, comment)
    if refusal:
        refuse(*refusal)
    notify_request_event(locked, event, caller.actor, message)
    return locked


def _decide(run: Run, caller: Caller, approve: bool, comment: str) -> tuple[str, str]:
    """Record the decision on ``run`` (locked by the caller's transaction), end or
    enqueue it, write the audit row; (webhook event, message)."""
    Approval.objects.create(
        run=run,
        user=caller.user if getattr(caller.user, "pk", None) else None,
        username=caller.actor[:150],
        decision=Approval.Decision.APPROVE if approve else Approval.Decision.REJECT,
        comment=comment,
    )
    said = f": {comment}" if comment else ""
    if not approve:
        run.state = Run.State.REJECTED
        run.finished_at = timezone.now()
        run.message = f"rejected by {caller.actor}{said}"
        run.save(update_fields=["state", "finished_at", "message"])
        outcome, event = AuditEvent.Outcome.REJECTED, "rejected"
        message = f"{run.action} #{run.pk} on {run.target} {run.message}"
    else:
        outcome, event = AuditEvent.Outcome.APPROVED, "approved"
        approvals = run.approvals.filter(decision=Approval.Decision.APPROVE).count()
        message = (
            f"{run.action} #{run.pk} on {run.target} approved by {caller.actor} "
            f"({approvals} of {run.approvals_required}){said}"
        )
        if approvals >= run.approvals_required:
            job_defer(run, earliest_start(run.target, run.run_at))
            run.message = f"approved by {_approvers(run)}"
            run.save(update_fields=["state", "job_id", "run_at", "message"])
            if run.state == Run.State.QUEUED:
                message += "; queued"
            else:
                message += f"; scheduled for {run.run_at:%Y-%m-%d %H:%M %Z}"
    audit_record(
        caller=caller,
        action="approve" if approve else "reject",
        outcome=outcome,
        target=run.target,
        migrations=list(run.planned),
        message=message,
        run=run,
    )
    return event, message


def _approvers(run: Run) -> str:
    names = run.approvals.filter(decision=Approval.Decision.APPROVE).values_list(
        "username", flat=True
    )
    return ", ".join(names)


def request_ttl() -> timedelta:
    return timedelta(seconds=settings.MIGRATION_REQUEST_TTL)


def requests_expire() -> list[int]:
    """End every request left unapproved for longer than MIGRATION_REQUEST_TTL."""
    cutoff = timezone.now() - request_ttl()
    expired = []
    for run in Run.objects.filter(state=Run.State.AWAITING_APPROVAL, created_at__lt=cutoff):
        message = (
            f"expired: not approved within {request_ttl()} "
            f"({run.approvals.filter(decision=Approval.Decision.APPROVE).count()} of "
            f"{run.approvals_required} approvals)"
        )
        ended = Run.objects.filter(pk=run.pk, state=Run.State.AWAITING_APPROVAL).update(
            state=Run.State.EXPIRED, finished_at=timezone.now(), message=message
        )
        if not ended:
            continue
        run.refresh_from_db()
        audit_record(
            caller=Caller(actor="system", channel=run.channel),
            action="expire",
            outcome=AuditEvent.Outcome.EXPIRED,
            target=run.target,
            migrations=list(run.planned),
            message=f"{run.action} #{run.pk} on {run.target} {message}",
            run=run,
        )
        notify_request_event(run, "expired", "system", message)
        expired.append(run.pk)
    return expired


def request_end_stale(run: Run, current_hash: str) -> None:
    """An approved run whose plan changed before it ran: ``stale``, nothing runs."""
    message = (
        "stale: the migrations or the applied set changed after the request was made "
        f"(plan {run.plan_hash[:12]}, now {current_hash[:12]}); nothing was run, "
        "request it again"
    )
    ended = Run.objects.filter(pk=run.pk, state__in=(Run.State.QUEUED, Run.State.SCHEDULED)).update(
        state=Run.State.STALE, finished_at=timezone.now(), message=message
    )
    if not ended:
        return
    run.refresh_from_db()
    audit_record(
        caller=Caller.of_run(run),
        action=run.action,
        outcome=AuditEvent.Outcome.STALE,
        target=run.target,
        migrations=list(run.planned),
        message=f"{run.action} #{run.pk} on {run.target} {message}",
        run=run,
    )
    notify_request_event(run, "stale", "system", message)


def require_comment_text(comment) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise InvalidRequest('"comment" must be a string')
    return comment
