"""``POST /admin/migrations/runs/<id>/cancel`` and ``POST /admin/migrations/unlock``:
HTTP to ``run_cancel`` / ``lock_break`` (core/services/control.py), which write the
audit row of every attempt that reaches them."""

from django.http import HttpRequest

from migration_console.api.endpoint import ApiRequest, endpoint, json_response
from migration_console.api.schemas import (
    CancelRequest,
    CancelResult,
    DecisionRequest,
    Locked,
    Refused,
    RunDetail,
    UnlockRequest,
    UnlockResult,
)
from migration_console.api.service import DATABASE, answers, api
from migration_console.core.services.approvals import request_decide
from migration_console.core.services.control import lock_break, run_cancel
from migration_console.core.services.jobs import run_as_dict


@api.post(
    "runs/{run_id}/cancel",
    response=answers({200: CancelResult, 202: CancelResult, 409: Refused}),
    operation_id="cancelRun",
    summary="withdraw a queued run, or stop a running one after its current statement "
    "(its transactional file rolls back, no further file starts)",
)
@endpoint(action="cancel", changes=True)
def cancel(request: HttpRequest, run_id: int, body: CancelRequest):
    """200 once the run has ended (cancelled, normally); 202 when its runner has not
    stopped within 5 s; 409 when it had already finished; 404 for no such run."""
    api_request: ApiRequest = request.auth
    api_request.audited = True  # run_cancel writes the audit row, whatever happens
    run = run_cancel(run_id=run_id, caller=api_request.caller)
    return json_response(
        200 if run.finished else 202,
        {
            "id": run.pk,
            "target": run.target,
            "action": run.action,
            "state": run.state,
            "finished": run.finished,
            "cancel_requested_by": run.cancel_requested_by,
            "message": run.message,
        },
    )


@api.post(
    "unlock",
    response=answers({200: UnlockResult, 409: Refused | Locked}),
    operation_id="breakLock",
    summary="terminate the session holding the target's advisory lock",
)
@endpoint(action="unlock", changes=True)
def unlock(request: HttpRequest, body: UnlockRequest, database: str = DATABASE):
    """Terminate the session holding the target's advisory lock (``"force": true`` also
    when it is a live run of this console) and check the lock is free. 200: the lock
    is free, or was not held; 409: held by a live run of this console (cancel it, or
    force), or the holder could not be terminated."""
    api_request: ApiRequest = request.auth
    target = api_request.target()
    api_request.audited = True  # lock_break writes the audit row, whatever happens
    return json_response(
        200, lock_break(target_name=target.name, caller=api_request.caller, force=body.force)
    )


def _decide(request: HttpRequest, run_id: int, body: DecisionRequest, *, approve: bool):
    api_request: ApiRequest = request.auth
    api_request.audited = True  # request_decide writes the audit row, whatever happens
    run = request_decide(
        run_id=run_id, caller=api_request.caller, approve=approve, comment=body.comment
    )
    return json_response(200, run_as_dict(run))


@api.post(
    "runs/{run_id}/approve",
    response=answers({200: RunDetail, 409: Refused}),
    operation_id="approveRun",
    summary="approve a requested run (another superuser than its requester); the last "
    "approval queues it",
)
@endpoint(action="approve", changes=True)
def approve(request: HttpRequest, run_id: int, body: DecisionRequest):
    """200: the run as it is now (``queued``/``scheduled`` after the last approval, still
    ``awaiting_approval`` before); 409: your own request, already decided by you, or
    not awaiting approval; 404: no such run."""
    return _decide(request, run_id, body, approve=True)


@api.post(
    "runs/{run_id}/reject",
    response=answers({200: RunDetail, 409: Refused}),
    operation_id="rejectRun",
    summary="reject a requested run: it ends rejected and never runs",
)
@endpoint(action="reject", changes=True)
def reject(request: HttpRequest, run_id: int, body: DecisionRequest):
    """200: the run, ``rejected``; 409: your own request or not awaiting approval."""
    return _decide(request, run_id, body, approve=False)
