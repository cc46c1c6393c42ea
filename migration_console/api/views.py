"""The operations of SPEC's JSON API: each translates HTTP to one service call.

Ninja validates each body against its schema and documents the operation from its
declared answers; the views render the services' own dicts (``json_response``), so
an answer is exactly what the service said (api/schemas.py describes it)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views import defaults

from migration_console.api import conf
from migration_console.api.endpoint import ApiRequest, endpoint, json_response
from migration_console.api.errors import ApiError
from migration_console.api.schemas import (
    ActionFailed,
    ActionResult,
    BaselineRequest,
    Error,
    GroupStatus,
    History,
    Locked,
    Queued,
    Refused,
    RepairRequest,
    RollbackRequest,
    RunCancelled,
    RunDetail,
    RunFailed,
    RunStart,
    RunSuccess,
    RunUpToDate,
    Status,
)
from migration_console.api.service import DATABASE, GROUP, answers, api, openapi_document
from migration_console.core.models import Run
from migration_console.core.services.fleet import group_run_start, group_status_answer
from migration_console.core.services.groups import group_get
from migration_console.core.services.jobs import (
    recorded_answer,
    run_as_dict,
    run_settled,
    run_start,
    run_wait,
)
from migration_console.core.services.runs import run_close_if_dead
from migration_console.core.services.scheduling import target_policy_needs_plan
from migration_console.core.services.status import target_status, target_status_answer

BIGINT_MAX = 2**63 - 1

# ``database`` (?database=) is declared for validation and the document; the guard's
# ApiRequest.target() reads the same value, as it does for a refusal's audit row.


@api.get(
    "status",
    response=answers({200: Status | GroupStatus}, body=False),
    operation_id="getStatus",
    summary="state of every migration of a target",
)
@endpoint(action="status")
def status(request: HttpRequest, database: str = DATABASE, group: str | None = GROUP):
    """SPEC's status JSON, served as cached bytes while the files, the tracking rows
    and the lock holder are unchanged (see ``target_status_answer``); with ``?group=``,
    one summary per member of the group.

    A poller that sends back the ``ETag`` in ``If-None-Match`` gets a bodiless 304
    while nothing changed; a client that accepts gzip gets the answer compressed
    (once per answer, not per request)."""
    api_request: ApiRequest = request.auth
    if group is not None:
        return json_response(200, group_status_answer(group_get(group)))
    answer = target_status_answer(api_request.target(), lint=True)
    if _etag_matches(request.headers.get("If-None-Match", ""), answer.etag):
        response = HttpResponseNotModified()
    elif _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        response = HttpResponse(answer.gzipped(), content_type="application/json")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(answer.body, content_type="application/json")
    response["ETag"] = answer.etag
    response["Cache-Control"] = "no-store"
    patch_vary_headers(response, ("Accept-Encoding",))
    return response


def _etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: ``*`` or any listed tag, compared weakly (``W/`` ignored)."""
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def _accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip: listed (or ``*``) with a quality above 0;
    gzip's own entry wins over ``*``."""
    qualities = {}
    for part in header.lower().split(","):
        coding, _, params = part.partition(";")
        quality = params.replace(" ", "").removeprefix("q=") or "1"
        try:
            qualities[coding.strip()] = float(quality)
        except ValueError:
            qualities[coding.strip()] = 0.0
    for coding in ("gzip", "x-gzip", "*"):
        if coding in qualities:
            return qualities[coding] > 0
    return False


@api.get(
    "history",
    response=answers({200: History}, body=False),
    operation_id="getHistory",
    summary="recorded migrations, newest first",
)
@endpoint(action="history")
def history(request: HttpRequest, database: str = DATABASE):
    """Every recorded migration (completed or failed), newest first, as ``migrate_sql
    history --json`` prints it, with the file set's problems beside them."""
    api_request: ApiRequest = request.auth
    state = target_status(api_request.target(), with_lock_holder=False)
    recorded = sorted(
        (item for item in state.items if item.row is not None),
        key=lambda item: item.applied_at,
        reverse=True,
    )
    return json_response(
        200,
        {
            "database": state.target.name,
            "total": len(recorded),
            "migrations": [item.as_dict() for item in recorded],
            "problems": [problem.as_dict() for problem in state.problems],
        },
    )


def _answer(run: Run, wait: bool) -> HttpResponse:
    """The run's own answer once a worker has settled it (waiting at most
    MIGRATION_API_WAIT seconds), else 202 with the address to follow it at."""
    url = reverse("migrations_api:run-detail", args=[run.pk])
    if run.state == Run.State.AWAITING_APPROVAL:  # no worker takes it before its approvals
        return json_response(
            202,
            {
                "status": run.state,
                "run": run.pk,
                "url": url,
                "approvals_required": run.approvals_required,
            },
        )
    if run.state == Run.State.SCHEDULED:
        return json_response(
            202,
            {"status": run.state, "run": run.pk, "url": url, "run_at": run.run_at.isoformat()},
        )
    if wait:
        run = run_wait(run_id=run.pk, timeout=settings.MIGRATION_API_WAIT)
    if not run_settled(run):
        return json_response(202, {"status": "queued", "run": run.pk, "url": url})
    return json_response(*recorded_answer(run))


@api.post(
    "run",
    response=answers(
        {
            200: RunSuccess | RunUpToDate | RunCancelled,
            202: Queued,
            409: Locked | Refused,
            500: RunFailed | Error,
        }
    ),
    operation_id="runMigrations",
    summary="queue a run of the pending migrations for a worker and wait for it "
    "(MIGRATION_API_WAIT seconds at most)",
)
@endpoint(action="run", changes=True)
def run(request: HttpRequest, body: RunStart, database: str = DATABASE):
    """200: applied, nothing was pending, or cancelled meanwhile; 202: ``"wait": false``,
    or the wait ended first; 409: another run holds the lock, or the run would be
    unsafe; 500: a migration failed (``details``: the database's message)."""
    api_request: ApiRequest = request.auth
    if body.group is not None:
        api_request.audited = True  # run_start records the request; the group its run
        parent = group_run_start(
            group=group_get(body.group), caller=api_request.caller, run_at=body.run_at
        )
        return _answer(parent, wait=False)
    target = api_request.target()
    api_request.audited = True  # the worker records the run and its audit row, whatever happens
    plan_hash = ""
    if target_policy_needs_plan(target.name):
        # A request is bound to the plan as it is now: a change before it runs is stale.
        plan_hash = target_status(target, with_lock_holder=False).plan_hash
    queued = run_start(
        target_name=target.name, caller=api_request.caller, plan_hash=plan_hash, run_at=body.run_at
    )
    return _answer(queued, body.wait)


@api.get(
    "runs/{run_id}",
    response=answers({200: RunDetail}, body=False),
    operation_id="getRun",
    summary="one run, rollback, baseline or repair as its worker left it",
)
@endpoint(action="run_status")
def run_detail(request: HttpRequest, run_id: int):
    """One run as a worker left it: state, attempts, steps, blockers, message; 404 for
    no such run."""
    found = Run.objects.filter(pk=run_id).first() if run_id <= BIGINT_MAX else None
    if found is None:
        raise ApiError(404, "unknown run", f"there is no run #{run_id}")
    return json_response(200, run_as_dict(run_close_if_dead(found)))


def _maintain(request: HttpRequest, action: str, *, version: str, wait: bool, **flags):
    """Rollback, baseline or repair: one queued action, answered as a run is."""
    api_request: ApiRequest = request.auth
    target = api_request.target()
    api_request.audited = True  # the worker records the action and its audit row, whatever happens
    queued = run_start(
        target_name=target.name,
        caller=api_request.caller,
        plan_hash="",
        action=action,
        arguments={"version": version, **flags},
    )
    return _answer(queued, wait)


MAINTENANCE_ANSWERS = answers(
    {200: ActionResult, 202: Queued, 409: Locked | Refused, 500: ActionFailed | Error}
)


@api.post(
    "rollback",
    response=MAINTENANCE_ANSWERS,
    operation_id="rollbackMigrations",
    summary="run the down files newest first down to and including `to`",
)
@endpoint(action="rollback", changes=True)
def rollback(request: HttpRequest, body: RollbackRequest, database: str = DATABASE):
    """Run the down files of every applied migration at or above ``"to"``, newest
    first, under the lock. 409: locked, or a down file is missing; 500: a down file
    failed."""
    return _maintain(request, "rollback", version=body.to, wait=body.wait)


@api.post(
    "baseline",
    response=MAINTENANCE_ANSWERS,
    operation_id="baselineMigrations",
    summary="record every file up to `to` as completed without running it",
)
@endpoint(action="baseline", changes=True)
def baseline(request: HttpRequest, body: BaselineRequest, database: str = DATABASE):
    """Record every file up to ``"to"`` as completed without running it. 409: locked,
    or tracking rows exist at or above ``to``."""
    return _maintain(request, "baseline", version=body.to, wait=body.wait)


@api.post(
    "repair",
    response=MAINTENANCE_ANSWERS,
    operation_id="repairMigration",
    summary="resolve a failed (clear, or mark_applied) or drifted (re-record) migration",
)
@endpoint(action="repair", changes=True)
def repair(request: HttpRequest, body: RepairRequest, database: str = DATABASE):
    """Resolve the failed (clear it, or ``"mark_applied": true``) or drifted (re-record
    its checksum) migration ``"version"``. 409: locked, or the tracking row changed."""
    return _maintain(
        request, "repair", version=body.version, wait=body.wait, mark_applied=body.mark_applied
    )


@api.get(
    "openapi.json",
    auth=None,
    response={200: dict, frozenset({405, 429}): Error},
    operation_id="getOpenApi",
    summary="this document",
)
@endpoint(action="openapi")
def openapi(request: HttpRequest):
    """Generated by django-ninja from the operations' schemas; no token needed."""
    return json_response(200, openapi_document())


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
