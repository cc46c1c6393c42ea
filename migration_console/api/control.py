"""``POST /admin/migrations/runs/<id>/cancel`` and ``POST /admin/migrations/unlock``:
HTTP to ``run_cancel`` / ``lock_break`` (core/services/control.py), which write the
audit row of every attempt that reaches them."""

import json

from django.http import HttpRequest

from migration_console.api.endpoint import ApiRequest, api_endpoint
from migration_console.api.errors import bad_request
from migration_console.core.services.control import lock_break, run_cancel


@api_endpoint(methods=("POST",), action="cancel", changes=True)
def cancel(request: HttpRequest, api: ApiRequest, run_id: int):
    """Withdraw a queued run, or stop a running one (its current transactional file
    rolls back, no further file starts): 200 once it has ended, 202 when its runner
    has not stopped within 5 s."""
    body = api.json_body(allowed={"confirm"})
    api.require_confirm(body)
    api.audited = True  # run_cancel writes the audit row, whatever happens
    run = run_cancel(run_id=run_id, caller=api.caller)
    return (200 if run.finished else 202), {
        "id": run.pk,
        "target": run.target,
        "action": run.action,
        "state": run.state,
        "finished": run.finished,
        "cancel_requested_by": run.cancel_requested_by,
        "message": run.message,
    }


@api_endpoint(methods=("POST",), action="unlock", changes=True)
def unlock(request: HttpRequest, api: ApiRequest):
    """Terminate the session holding the target's advisory lock (``"force": true`` also
    when it is a live run of this console) and check the lock is free."""
    body = api.json_body(allowed={"confirm", "force"})
    api.require_confirm(body)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise bad_request(f'"force" must be true or false, got {json.dumps(force)[:40]}')
    target = api.target()
    api.audited = True  # lock_break writes the audit row, whatever happens
    return lock_break(target_name=target.name, caller=api.caller, force=force)
