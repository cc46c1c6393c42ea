"""``api_endpoint``: everything an API view needs besides its own few lines.

In order: rate limit (per client IP, before anything costly), method,
authentication (token, or session + CSRF), access (an active superuser on an
allowed IP), body size (never read past 64 KiB), then the view. Whatever goes
wrong becomes a JSON answer; denials (and, for changing endpoints, every
request) become audit rows. A view gets an
``ApiRequest`` and returns a dict (200) or ``(status, dict)``, or raises
``ApiError`` or a service error.

A new endpoint, e.g. rollback::

    @api_endpoint(methods=("POST",), action="rollback", changes=True)
    def rollback(request, api: ApiRequest):
        body = api.json_body(allowed={"confirm", "version"})
        api.require_confirm(body)
        target = api.target()
        api.audited = True  # the service writes the audit row from here on
        result = rollback_execute(target_name=target.name, version=..., caller=api.caller)
        return 200, result.as_dict()
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
        if len(name) > 63:
            raise UnknownTarget(f"unknown database {name[:63]!r}…")
        if not name:
            raise UnknownTarget("unknown database ''")
        return target_get(name)

    def json_body(self, *, allowed: set[str]) -> dict:
        """The body as a JSON object with only ``allowed`` keys, or ApiError 400."""
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
        unknown = sorted(set(data) - allowed)
        if unknown:
            names = ", ".join(repr(key[:40]) for key in unknown[:5])
            raise bad_request(f"unknown field(s): {names}; allowed: {', '.join(sorted(allowed))}")
        return data

    @staticmethod
    def require_confirm(body: dict) -> None:
        if "confirm" not in body:
            raise bad_request('"confirm": true is required')
        if body["confirm"] is not True:
            raise bad_request(
                f'"confirm" must be the JSON value true, got {json.dumps(body["confirm"])[:40]}'
            )

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


def api_endpoint(
    *,
    methods: tuple[str, ...],
    action: str,
    changes: bool = False,
    public: bool = False,
) -> Callable:
    """Wrap an API view. ``changes``: tight rate, and every request is audited.
    ``public``: no authentication (the OpenAPI document)."""
    allowed = set(methods) | ({"HEAD"} if "GET" in methods else set())
    allow_header = ", ".join(sorted(allowed))
    group = f"migration_console.api.{'change' if changes else 'read'}"

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @vary_on_headers("Authorization", "Cookie")
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            api = ApiRequest(request=request, action=action, ip=client_ip(request))
            try:
                return _handle(view, request, api, *args, **kwargs)
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

        def _handle(view, request, api: ApiRequest, *args, **kwargs):
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
            result = view(request, api, *args, **kwargs)
            if isinstance(result, HttpResponse):  # already encoded (the cached status)
                return result
            status, data = result if isinstance(result, tuple) else (200, result)
            return json_response(status, data)

        return wrapper

    return decorate


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
