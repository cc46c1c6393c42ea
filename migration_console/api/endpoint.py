"""The guard in front of every API operation: everything besides the view's few lines.

django-ninja routes, validates and documents the operations (api/service.py); this
guard runs first, in order: rate limit (per client IP, before anything costly),
method, authentication (token, or session + CSRF), access (an active superuser on
an allowed IP), body size (never read past 64 KiB), strict JSON, then ninja's
operation. Whatever goes wrong, there or in the operation, becomes a JSON answer;
denials (and, for changing endpoints, every request) become audit rows.

An operation declares its audit action next to ninja's route, e.g.::

    @api.post("rollback", response=answers({200: ActionResult}))
    @endpoint(action="rollback", changes=True)
    def rollback(request, body: RollbackRequest, database: str = DATABASE):
        api: ApiRequest = request.auth
        ...
        return json_response(200, result)
"""

import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.vary import vary_on_headers
from ninja.operation import PathView

from accounts.access import can_use_api
from accounts.ip import client_ip
from accounts.ratelimit import (
    UNAVAILABLE,
    UNAVAILABLE_MESSAGE,
    RateLimiterUnavailable,
    over_limit,
)
from accounts.views import ratelimited
from migration_console.api import conf
from migration_console.api.auth import Credentials, authenticate
from migration_console.api.errors import ApiError, bad_request, forbidden, unauthorized
from migration_console.core.models import AuditEvent
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import (
    LockNotAcquired,
    MigrationConsoleError,
    MigrationSetError,
    RunRefused,
    TargetUnavailable,
    UnknownTarget,
)
from migration_console.core.services.targets import Target, target_get
from migration_console.targets import DEFAULT_TARGET

logger = logging.getLogger("migration_console.api")

CHANNEL = "api"


def json_response(status: int, data: dict, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(data, status=status, json_dumps_params={"default": str})
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


@dataclass
class ApiRequest:
    request: HttpRequest
    action: str
    ip: str
    credentials: Credentials = field(default_factory=Credentials)
    audited: bool = False  # set once a service call records the attempt itself
    body: dict | None = None  # a POST's JSON object, read before ninja validates it

    @property
    def user(self):
        return self.credentials.user

    @property
    def token_prefix(self) -> str:
        return self.credentials.token.prefix if self.credentials.token else ""

    @property
    def actor(self) -> str:
        return self.user.get_username() if self.user is not None else "anonymous"

    @property
    def database(self) -> str:
        return self.request.GET.get("database", DEFAULT_TARGET)

    @property
    def caller(self) -> Caller:
        """Who asks, for run_execute and its siblings and for the audit rows."""
        return Caller(
            actor=self.actor,
            channel=CHANNEL,
            user=self.user,
            client_ip=self.ip or None,
            token_prefix=self.token_prefix,
        )

    def target(self) -> Target:
        """The ``?database=`` target; unknown names are a 404 (UnknownTarget)."""
        name = self.database
        if len(name) > 128:  # a target, or a group's member <group>/<schema>
            raise UnknownTarget(f"unknown database {name[:63]!r}…")
        if not name:
            raise UnknownTarget("unknown database ''")
        return target_get(name)

    def read_json_object(self) -> dict:
        """The body as one strict JSON object (no duplicate keys, NaN or deep nesting),
        or ApiError 400; its keys and values are the operation's schema's to judge."""
        try:
            raw = self.request.body
        except RequestDataTooBig:
            raise bad_request(f"request body exceeds {conf.MAX_BODY_BYTES} bytes") from None
        if len(raw) > conf.MAX_BODY_BYTES:
            raise bad_request(f"request body exceeds {conf.MAX_BODY_BYTES} bytes")
        if not raw.strip():
            raise bad_request('empty body: send a JSON object such as {"confirm": true}')
        try:
            data = json.loads(
                raw.decode("utf-8"),
                parse_constant=_reject_constant,
                object_pairs_hook=_no_duplicates,
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            elif isinstance(exc, UnicodeDecodeError):
                reason = "not UTF-8"
            raise bad_request(f"malformed JSON body: {reason}"[:200]) from None
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object")
        return data

    def audit(self, *, outcome: str, message: str, migrations: list[str] | None = None) -> None:
        audit_record(
            caller=self.caller,
            action=self.action,
            outcome=outcome,
            target=_printable(self.database),
            migrations=migrations,
            message=_printable(message[:2000]),
        )
        self.audited = True


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a hostile ?database= must not break the audit row."""
    return text.replace("\x00", "\\x00")


def service_error(exc: MigrationConsoleError) -> ApiError:
    """A service error as the API answers it; never a DSN or password."""
    if isinstance(exc, LockNotAcquired):
        return ApiError(409, exc.error, exc.message, outcome="locked", holder=exc.holder)
    if isinstance(exc, RunRefused):
        return ApiError(409, exc.error, exc.message, reason=exc.reason, versions=exc.versions)
    if isinstance(exc, UnknownTarget):
        return ApiError(404, exc.error, exc.message)
    if isinstance(exc, TargetUnavailable):
        # The service's message names host and user; the API says only which target.
        logger.warning("target unavailable: %s", exc.message)
        return ApiError(503, exc.error, "cannot connect to the database", outcome="error")
    if isinstance(exc, MigrationSetError):
        return ApiError(500, exc.error, exc.message, outcome="error")
    return ApiError(exc.http_status, exc.error, exc.message, outcome="error")


@dataclass(frozen=True)
class Policy:
    action: str  # the audit rows' action
    changes: bool  # tight rate, and every request is audited


def endpoint(*, action: str, changes: bool = False) -> Callable:
    """Mark a ninja operation with its audit action; ``guarded`` reads it."""

    def mark(view: Callable) -> Callable:
        view.api_policy = Policy(action=action, changes=changes)
        return view

    return mark


def guarded(path_view: PathView) -> Callable:
    """The Django view of one API path: the guard, then ninja's operation there.
    An operation without ninja ``auth`` is public (the OpenAPI document)."""
    [operation] = path_view.operations  # one operation per path, as SPEC lists them
    policy: Policy = operation.view_func.api_policy
    allowed = set(operation.methods) | ({"HEAD"} if "GET" in operation.methods else set())
    allow_header = ", ".join(sorted(allowed))
    group = f"migration_console.api.{'change' if policy.changes else 'read'}"
    changes, public = policy.changes, not operation.auth_callbacks

    @csrf_exempt
    @vary_on_headers("Authorization", "Cookie")
    @wraps(operation.view_func)
    def view(request: HttpRequest, **path_params):
        api = ApiRequest(request=request, action=policy.action, ip=client_ip(request))
        request.api_request = api  # what ninja's auth (service.BearerAuth) answers with
        try:
            response = _handle(request, api, path_params)
        except ApiError as exc:
            return _answer_error(api, exc, audit=changes or exc.outcome == "denied")
        except MigrationConsoleError as exc:
            # SPEC: Audit: a refusal for an unknown target is a row, reads included.
            audited = changes or isinstance(exc, UnknownTarget)
            return _answer_error(api, service_error(exc), audit=audited)
        except (RequestDataTooBig, SuspiciousOperation) as exc:
            error = bad_request(
                f"request body exceeds {conf.MAX_BODY_BYTES} bytes"
                if isinstance(exc, RequestDataTooBig)
                else "bad request"
            )
            return _answer_error(api, error, audit=changes)
        except Exception:
            logger.exception("API %s %s failed", request.method, request.path)
            error = ApiError(
                500, "internal error", "the server failed; see its log", outcome="error"
            )
            return _answer_error(api, error, audit=changes)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response

    def _handle(request: HttpRequest, api: ApiRequest, path_params: dict) -> HttpResponse:
        rate = conf.rate_run() if changes else conf.rate_read()
        try:
            limited = over_limit(request, group=group, key=_rate_key, rate=rate)
        except RateLimiterUnavailable as exc:
            return _refuse_uncounted(request, api, exc)
        if limited:
            api.audit(outcome=AuditEvent.Outcome.RATE_LIMITED, message=f"over {rate}")
            return ratelimited(request)
        if request.method not in allowed:
            raise ApiError(
                405,
                "method not allowed",
                f"{request.method[:10]} is not allowed here; use {allow_header}",
                headers={"Allow": allow_header},
            )
        if not public:
            authenticate(request, api.credentials)
            decision = can_use_api(api.user, api.ip)
            if not decision:
                if decision.status == 401:
                    raise unauthorized(decision.reason)
                raise forbidden(decision.reason)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > conf.MAX_BODY_BYTES:
            raise bad_request(f"request body exceeds {conf.MAX_BODY_BYTES} bytes")
        if request.method == "POST":  # every POST of this API takes a JSON object
            api.body = api.read_json_object()
        # Ninja's own errors come back raised (service.ConsoleApi.on_exception), so the
        # handlers above answer them as they answer the guard's.
        return operation.run(request, **path_params)

    return view


def _rate_key(group: str, request: HttpRequest) -> str:
    """The client IP as accounts.ip decides it (as RATELIMIT_IP_META_KEY does for
    django-ratelimit's "ip" key); an IPv6 client counts by its /64."""
    ip = client_ip(request)
    if not ip:
        return "unknown"
    if ":" in ip:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return ip


def _refuse_uncounted(request: HttpRequest, api: ApiRequest, exc: Exception) -> JsonResponse:
    """503 when the rate limit cannot count (fail closed), audited under whoever the
    token or session names (SPEC: Audit); nothing is allowed on that identity."""
    # A refused token or session still leaves what it named (e.g. an expired token's user).
    with contextlib.suppress(ApiError):
        authenticate(request, api.credentials)
    try:
        api.audit(outcome=AuditEvent.Outcome.ERROR, message=f"503 {exc}")
    except Exception:
        logger.exception("could not record the audit row of an uncounted API request")
    return json_response(503, {"error": UNAVAILABLE, "message": UNAVAILABLE_MESSAGE})


def _answer_error(api: ApiRequest, error: ApiError, *, audit: bool) -> JsonResponse:
    if audit and not api.audited:
        try:
            api.audit(outcome=error.outcome, message=f"{error.status} {error.message}")
        except Exception:
            logger.exception("could not record the audit row of a refused API request")
    return json_response(error.status, error.as_dict(), error.headers)
