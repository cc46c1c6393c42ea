"""The endpoints of SPEC's JSON API: each translates HTTP to one service call."""

import json
import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views import defaults

from migration_console.api import conf
from migration_console.api.endpoint import ApiRequest, api_endpoint, json_response
from migration_console.api.errors import ApiError, bad_request
from migration_console.api.openapi import openapi_document
from migration_console.core.models import Run
from migration_console.core.services.jobs import (
    recorded_answer,
    run_as_dict,
    run_settled,
    run_start,
    run_wait,
)
from migration_console.core.services.runs import run_close_if_dead
from migration_console.core.services.status import target_status, target_status_json

BIGINT_MAX = 2**63 - 1
VERSION = re.compile(r"[0-9]{1,64}")  # as maintenance.py reads a version


@api_endpoint(methods=("GET",), action="status")
def status(request: HttpRequest, api: ApiRequest):
    """SPEC's status JSON, served as cached bytes while the files, the tracking rows
    and the lock holder are unchanged (see ``target_status_json``)."""
    body = target_status_json(api.target(), lint=True)
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


@api_endpoint(methods=("GET",), action="history")
def history(request: HttpRequest, api: ApiRequest):
    """Every recorded migration (completed or failed), newest first, as ``migrate_sql
    history --json`` prints it, with the file set's problems beside them."""
    state = target_status(api.target(), with_lock_holder=False)
    recorded = sorted(
        (item for item in state.items if item.row is not None),
        key=lambda item: item.applied_at,
        reverse=True,
    )
    return {
        "database": state.target.name,
        "total": len(recorded),
        "migrations": [item.as_dict() for item in recorded],
        "problems": [problem.as_dict() for problem in state.problems],
    }


def _wait(body: dict) -> bool:
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise bad_request(f'"wait" must be true or false, got {json.dumps(wait)[:40]}')
    return wait


def _answer(run: Run, wait: bool):
    """The run's own answer once a worker has settled it (waiting at most
    MIGRATION_API_WAIT seconds), else 202 with the address to follow it at."""
    if wait:
        run = run_wait(run_id=run.pk, timeout=settings.MIGRATION_API_WAIT)
    if not run_settled(run):
        url = reverse("migrations_api:run-detail", args=[run.pk])
        return 202, {"status": "queued", "run": run.pk, "url": url}
    return recorded_answer(run)


@api_endpoint(methods=("POST",), action="run", changes=True)
def run(request: HttpRequest, api: ApiRequest):
    """Queue a run of the pending migrations for a worker and wait for its answer."""
    body = api.json_body(allowed={"confirm", "wait"})
    api.require_confirm(body)
    wait = _wait(body)
    target = api.target()
    api.audited = True  # the worker records the run and its audit row, whatever happens
    return _answer(run_start(target_name=target.name, caller=api.caller, plan_hash=""), wait)


@api_endpoint(methods=("GET",), action="run_status")
def run_detail(request: HttpRequest, api: ApiRequest, run_id: int):
    """One run as a worker left it: state, attempts, steps, message."""
    found = Run.objects.filter(pk=run_id).first() if run_id <= BIGINT_MAX else None
    if found is None:
        raise ApiError(404, "unknown run", f"there is no run #{run_id}")
    return run_as_dict(run_close_if_dead(found))


def _maintain(api: ApiRequest, action: str, field: str, meaning: str, *, options=()):
    """Rollback, baseline or repair: ``{"confirm": true, field: "<version>", ...options}``
    to one queued action, answered as a run is (400 bad body or version, 409
    locked/refused, 500 failed, 202 still queued)."""
    body = api.json_body(allowed={"confirm", "wait", field, *options})
    api.require_confirm(body)
    wait = _wait(body)
    version = body.get(field)
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise bad_request(f'"{field}" must be {meaning}, e.g. "003"')
    if not VERSION.fullmatch(str(version).strip()):
        # Refused here, not by the worker: the job's arguments hold only what can run.
        shown = json.dumps(version)[:40]
        raise bad_request(f'"{field}" must be {meaning}: digits, e.g. "003", got {shown}')
    flags = {}
    for option in options:
        value = body.get(option, False)
        if not isinstance(value, bool):
            raise bad_request(f'"{option}" must be true or false, got {json.dumps(value)[:40]}')
        flags[option] = value
    target = api.target()
    api.audited = True  # the worker records the action and its audit row, whatever happens
    queued = run_start(
        target_name=target.name,
        caller=api.caller,
        plan_hash="",
        action=action,
        arguments={"version": str(version), **flags},
    )
    return _answer(queued, wait)


@api_endpoint(methods=("POST",), action="rollback", changes=True)
def rollback(request: HttpRequest, api: ApiRequest):
    """Run the down files of every applied migration at or above ``"to"``, newest
    first, under the lock."""
    return _maintain(api, "rollback", "to", "the version to roll back to")


@api_endpoint(methods=("POST",), action="baseline", changes=True)
def baseline(request: HttpRequest, api: ApiRequest):
    """Record every file up to ``"to"`` as completed without running it."""
    return _maintain(api, "baseline", "to", "the version to baseline up to")


@api_endpoint(methods=("POST",), action="repair", changes=True)
def repair(request: HttpRequest, api: ApiRequest):
    """Resolve the failed (clear it, or ``"mark_applied": true``) or drifted (re-record
    its checksum) migration ``"version"``."""
    return _maintain(api, "repair", "version", "the version to repair", options=("mark_applied",))


@api_endpoint(methods=("GET",), action="openapi", public=True)
def openapi(request: HttpRequest, api: ApiRequest):
    return openapi_document()


def not_found(request: HttpRequest, rest: str = ""):
    """Any other path under /admin/migrations/: a JSON 404, not the admin's page."""
    return json_response(404, {"error": "not found", "message": "no such API endpoint"})


# Project-wide error handlers (migration_console.urls): JSON on API paths, else Django's.
def error_400(request, exception=None):
    if conf.is_api_path(request.path):
        return json_response(400, {"error": "bad request", "message": "bad request"})
    return defaults.bad_request(request, exception)


def error_403(request, exception=None):
    if conf.is_api_path(request.path):
        return json_response(403, {"error": "forbidden", "message": "forbidden"})
    return defaults.permission_denied(request, exception)


def error_404(request, exception=None):
    if conf.is_api_path(request.path):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def error_500(request):
    if conf.is_api_path(request.path):
        return json_response(
            500, {"error": "internal error", "message": "the server failed; see its log"}
        )
    return defaults.server_error(request)
