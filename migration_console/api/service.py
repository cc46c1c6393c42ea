"""The API as a django-ninja ``NinjaAPI``: routing, request validation and the OpenAPI
document generated from the operations' schemas (api/schemas.py).

Ninja serves nothing by itself here: api/urls.py maps SPEC's paths to ``django_view``,
which puts ``endpoint.guarded`` (rate limit, method, auth, IP rule, audit) in front of
ninja's operation, and every ninja error is raised back to that guard, which answers
it in SPEC's JSON error shape.
"""

import json
from functools import cache
from http import HTTPStatus

from django.http import HttpRequest
from ninja import NinjaAPI, Query
from ninja.errors import AuthenticationError, HttpError, ValidationErrorContext
from ninja.parser import Parser
from ninja.security import HttpBearer

from migration_console.api import conf
from migration_console.api.endpoint import ApiRequest, guarded
from migration_console.api.errors import ApiError, bad_request, unauthorized
from migration_console.api.schemas import BAD_REQUEST, Error
from migration_console.targets import DEFAULT_TARGET


class BearerAuth(HttpBearer):
    """The document's security scheme. The token (or session + CSRF) and the IP rule
    were checked by the guard before ninja runs; this only hands ninja the caller."""

    openapi_description = (
        "a token from `manage.py create_api_token USER` of an active superuser, used "
        "from an allowed network (a superuser session with CSRF works too)"
    )

    def __call__(self, request: HttpRequest) -> ApiRequest | None:
        api = getattr(request, "api_request", None)
        return api if api is not None and api.user is not None else None

    def authenticate(self, request, token):  # pragma: no cover - __call__ decides
        return None


class GuardedBody(Parser):
    """The guard has read the body strictly (endpoint.ApiRequest.read_json_object)."""

    def parse_body(self, request: HttpRequest) -> dict:
        return request.api_request.body


class ConsoleApi(NinjaAPI):
    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ApiError:
        """Ninja's 422 becomes SPEC's 400, naming the first problem in field order."""
        problem = error_contexts[0].pydantic_validation_error.errors(include_url=False)[0]
        if problem["type"] == BAD_REQUEST:
            return bad_request(problem["msg"])
        field = ".".join(str(part) for part in problem["loc"]) or "body"
        return bad_request(f'"{field}": {problem["msg"]}'[:200])

    def on_exception(self, request: HttpRequest, exc: Exception):
        if isinstance(exc, AuthenticationError):
            raise unauthorized("authentication required: Authorization: Bearer <token>")
        if isinstance(exc, HttpError):
            kind = HTTPStatus(exc.status_code).phrase.lower()
            raise ApiError(exc.status_code, kind, exc.message) from None
        raise exc


api = ConsoleApi(
    title="Migration Console API",
    version="1.0.0",
    description=(
        "Status, run, history, rollback, baseline and repair of SQL migrations per target "
        "database; cancel a run, break a stuck lock. Every call needs "
        "`Authorization: Bearer <token>` of an active superuser (or a superuser session "
        "with CSRF) from an allowed network. Durations are nanoseconds. Errors are JSON "
        "objects with `error` and `message`."
    ),
    auth=BearerAuth(),
    parser=GuardedBody(),
    docs_url=None,
    openapi_url=None,
    urls_namespace="migrations_api_ninja",
)

DATABASE = Query(
    DEFAULT_TARGET,
    description="the target's name (default db_main); an unknown name is 404",
)
GROUP = Query(
    None, description="a group of targets: one summary per member (instead of ?database=)"
)
_REFUSALS = (401, 403, 404, 405, 429, 500, 503)


def answers(specific: dict, *, body: bool = True) -> dict:
    """An operation's documented answers: its own, and the JSON errors every API path
    can give (400 too when it takes a body)."""
    common = frozenset(_REFUSALS + ((400,) if body else ()))
    return {common: Error, **specific}


def django_view(path: str):
    """The guarded Django view of ninja's operation at ``path`` (as registered)."""
    # Ninja binds routers to the API lazily; the bound copies are the ones it
    # documents and configures (auth, parser), so serve those.
    for bound in api._get_bound_routers():
        if path in bound.path_operations:
            return guarded(bound.path_operations[path])
    raise LookupError(f"no API operation at {path!r}")


@cache
def openapi_document() -> dict:
    """The generated document, as plain JSON (status codes as strings)."""
    # The operations register themselves when their modules are imported (the URLconf
    # does that); a caller outside a request (a test, a script) may come first.
    from migration_console.api import control, views  # noqa: F401

    document = json.loads(json.dumps(api.get_openapi_schema(path_prefix=conf.PREFIX[1:])))
    if not document.get("servers"):
        document.pop("servers", None)  # ninja's empty list says nothing
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"] = dict(sorted(operation["responses"].items()))
    return document
