"""NUL and control characters anywhere a request carries text: a 4xx, never a 500,
and exactly one audit row per attempt, stored cleaned (SPEC: Audit).

PostgreSQL refuses NUL in ``text`` and ``jsonb``; before the fix, a NUL in a
console URL segment or a typed user name made the audit insert itself fail, so
the refusal became a 500 that left no trace.
"""

import json
import re
import unicodedata

import pytest
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from tests.api_support import API, bearer
from tests.conftest import write_numbered
from tests.test_console_support import (  # noqa: F401 - fixtures
    PASSWORD,
    _fresh_rate_limits,
    make_user,
)
from tests.test_ratelimit_redis import request as live_request
from tests.test_ratelimit_redis import two_servers  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)

CONSOLE = "/admin/console/"
UNSAFE = ("Cc", "Cs", "Zl", "Zp")


def assert_stored_clean(event: AuditEvent) -> None:
    for field in ("actor", "target", "action"):
        value = getattr(event, field)
        assert not any(unicodedata.category(c) in UNSAFE for c in value), (field, value)
    assert not any(unicodedata.category(c) in UNSAFE and c not in "\t\n" for c in event.message), (
        event.message
    )
    for version in event.migrations:
        assert not any(unicodedata.category(c) in UNSAFE for c in version), version


def one_row(response, expected_status: int) -> AuditEvent:
    assert response.status_code == expected_status, response.content[:300]
    events = list(AuditEvent.objects.all())
    assert len(events) == 1, [(e.action, e.outcome, e.message) for e in events]
    assert_stored_clean(events[0])
    # nothing started (an API maintenance request keeps its refused Run as a record)
    assert not Run.objects.exclude(state__in=["error", "failed", "refused"]).exists()
    return events[0]


@pytest.fixture
def pending(target):
    write_numbered(target, 1)
    return target


def client_as(kind: str | None) -> Client:
    client = Client(raise_request_exception=False)
    if kind:
        client.force_login(make_user(kind, username=kind))
    return client


# --- console URL segments ---------------------------------------------------------------

POSTED_PATHS = [
    "targets/%00/run/",
    "targets/db_main%00/run/",
    "targets/db%01main/run/",
    "targets/%E2%80%A8/run/",  # U+2028: a line separator in a log line
    "targets/%00/rollback/confirm/",
    "targets/db_main%00/baseline/confirm/",
    "targets/%1b[2J/repair/confirm/",
]


@pytest.mark.parametrize("path", POSTED_PATHS)
@pytest.mark.parametrize(
    ("who", "status", "outcome"),
    [(None, 302, "denied"), ("staff_view", 403, "denied"), ("superuser", 400, "refused")],
)
def test_a_post_to_a_hostile_target_segment_is_refused_with_one_row(
    path, who, status, outcome, pending
):
    response = client_as(who).post(CONSOLE + path, {"confirm_database": "db_main"})

    event = one_row(response, status)
    assert (event.channel, event.outcome) == ("console", outcome)
    assert event.action in ("run", "rollback", "baseline", "repair")
    assert event.actor == (who or "anonymous")
    assert "\\x" in event.target or "\\u" in event.target


GET_PATHS = [
    "targets/%00/",
    "targets/db_main%00/plan/",
    "targets/%07/history/",
    "targets/%00/rollback/",
]


@pytest.mark.parametrize("path", GET_PATHS)
def test_a_read_of_a_hostile_target_segment_is_refused_with_one_row(path, pending):
    response = client_as("superuser").get(CONSOLE + path)

    event = one_row(response, 400)
    assert (event.action, event.outcome) == ("view", "refused")
    assert "URL segment" in event.message


# --- console form fields and query parameters -----------------------------------------

FORMS = [
    ("targets/db_main/run/", {"confirm_database": "db_main\x00", "plan_hash": "x"}),
    ("targets/db_main/run/", {"confirm_database": "db_main", "plan_hash": "\x00"}),
    ("targets/db_main/run/", {"\x00": "1", "confirm_database": "db_main"}),
    ("targets/db_main/rollback/confirm/", {"version": "\x00", "confirm_database": "db_main"}),
    ("targets/db_main/repair/confirm/", {"version": "001\x00", "mark_applied": "1"}),
    ("targets/db_main/baseline/confirm/", {"version": "001", "confirm_version": "\x0b"}),
]


@pytest.mark.parametrize(("path", "data"), FORMS)
def test_control_characters_in_a_console_form_are_a_400_with_one_row(path, data, pending):
    response = client_as("superuser").post(CONSOLE + path, data)

    event = one_row(response, 400)
    assert (event.outcome, event.target) == ("refused", "db_main")
    assert "form field" in event.message
    assert not pending.table_exists("schema_migrations") or pending.tracking() == {}


QUERIES = [
    ("targets/db_main/rollback/", {"to": "\x00"}),
    ("targets/db_main/repair/", {"version": "001\x00", "mark_applied": "1"}),
    ("targets/db_main/baseline/", {"\x00": "x"}),
    ("audit/", {"user": "\x00"}),
    ("audit/", {"target": "db\x00"}),
    ("audit/export.csv", {"action": "\x1f"}),
]


@pytest.mark.parametrize(("path", "query"), QUERIES)
def test_control_characters_in_a_query_parameter_are_a_400_with_one_row(path, query, pending):
    response = client_as("superuser").get(CONSOLE + path, query)

    event = one_row(response, 400)
    assert (event.action, event.outcome) == ("view", "refused")
    assert "query parameter" in event.message


def test_tabs_and_newlines_in_a_form_field_are_not_hostile(pending):
    response = client_as("superuser").post(
        CONSOLE + "targets/db_main/run/", {"confirm_database": "db_main\t\n", "plan_hash": "x"}
    )

    # an ordinary refusal: the plan hash does not match
    event = one_row(response, 409)
    assert event.outcome == "refused"


# --- login ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"username": "evil\x00user", "password": "x"},
        {"username": "root", "password": "pw\x00"},
        {"username": "root\x1b[31m", "password": "x"},
    ],
)
def test_a_login_with_control_characters_is_refused_then_rate_limited_with_a_row_each(
    form, settings
):
    settings.CONSOLE_LOGIN_RATE = "5/m"
    make_user("superuser", username="root")
    client = Client(raise_request_exception=False)

    codes = [client.post("/admin/login/", form).status_code for _ in range(6)]

    assert codes == [400, 400, 400, 400, 400, 429]
    events = list(AuditEvent.objects.order_by("id"))
    assert [(e.action, e.outcome) for e in events] == [("login", "refused")] * 5 + [
        ("login", "rate_limited")
    ]
    for event in events:
        assert_stored_clean(event)
        assert event.client_ip == "127.0.0.1"
    assert "_auth_user_id" not in client.session


# --- API ----------------------------------------------------------------------------------


@pytest.fixture
def root_token(db):
    return token_create(user=make_user("superuser", username="root")).raw


@pytest.mark.parametrize("database", ["\x00", "db_main\x00", "\x1b", "\u2028"])
@pytest.mark.parametrize(("method", "endpoint"), [("get", "status"), ("get", "history")])
def test_a_hostile_database_parameter_is_a_404_with_one_row(
    database, method, endpoint, pending, root_token
):
    response = getattr(Client(raise_request_exception=False), method)(
        API + endpoint, {"database": database}, headers=bearer(root_token)
    )

    event = one_row(response, 404)
    assert (event.channel, event.action, event.outcome) == ("api", endpoint, "refused")
    assert event.actor == "root"


API_BODIES = [
    ("run", {"confirm": True, "\u0000": 1}),
    ("rollback", {"confirm": True, "to": "\u0000"}),
    ("rollback", {"confirm": True, "to": "001\u0000"}),
    ("baseline", {"confirm": True, "to": "\u001b[2J"}),
    ("repair", {"confirm": True, "version": "\ud800"}),
    ("repair", {"confirm": True, "version": "001", "mark_applied": "\u0000"}),
]


@pytest.mark.parametrize(("endpoint", "body"), API_BODIES)
def test_control_characters_in_an_api_field_are_a_4xx_with_one_row(
    endpoint, body, pending, root_token
):
    response = Client(raise_request_exception=False).post(
        API + endpoint,
        data=json.dumps(body),
        content_type="application/json",
        headers=bearer(root_token),
    )

    assert 400 <= response.status_code < 500, response.content[:300]
    assert response["Content-Type"] == "application/json"
    event = one_row(response, response.status_code)
    assert (event.channel, event.action) == ("api", endpoint)
    assert pending.tracking() == {}


@pytest.mark.parametrize("header", ["Bearer mc_\x00", "Bearer \x00\x00", "\x00"])
def test_control_characters_in_the_authorization_header_are_a_401_with_one_row(header, pending):
    response = Client(raise_request_exception=False).post(
        API + "run",
        data='{"confirm": true}',
        content_type="application/json",
        HTTP_AUTHORIZATION=header,
    )

    event = one_row(response, 401)
    assert (event.action, event.outcome, event.actor) == ("run", "denied", "anonymous")


# --- the admin's own pages ----------------------------------------------------------------

ADMIN_GETS = [
    ("/admin/core/run/", {"q": "\x00"}),
    ("/admin/core/auditevent/", {"q": "x\x00"}),
    ("/admin/core/run/", {"target": "\x00"}),
    ("/admin/auth/user/", {"q": "\x00"}),
    ("/admin/accounts/apitoken/", {"q": "\x00"}),
    ("/admin/core/run/%00/change/", {}),
    ("/admin/", {"\x00": "1"}),
]


@pytest.mark.parametrize(("path", "query"), ADMIN_GETS)
def test_control_characters_on_an_admin_page_are_a_400_with_one_row(path, query, db):
    response = client_as("superuser").get(path, query)

    event = one_row(response, 400)
    assert (event.channel, event.action, event.outcome) == ("console", "view", "refused")


# --- through gunicorn, with the limits in Redis -------------------------------------------


@pytest.mark.slow
def test_hostile_bytes_through_two_gunicorn_processes_sharing_redis(request, target):
    first, second = request.getfixturevalue("two_servers")  # login 4/h, limits in Redis
    make_user("superuser", username="root")
    _, headers, page = live_request(first, "GET", "/admin/login/")
    cookie = next(v for k, v in headers if k.lower() == "set-cookie" and "csrftoken=" in v)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": cookie.split(";")[0],
    }
    login = f"csrfmiddlewaretoken={token}&username=evil%00user&password=x"

    codes = [
        live_request((first, second)[n % 2], "POST", "/admin/login/", login, form)[0]
        for n in range(6)
    ]
    run = live_request(
        first, "POST", "/admin/console/targets/db%00main/run/", f"csrfmiddlewaretoken={token}", form
    )[0]

    assert codes == [400, 400, 400, 400, 429, 429]
    assert run == 302  # anonymous: to the login page
    events = list(AuditEvent.objects.order_by("id"))
    assert [(e.action, e.outcome) for e in events] == [("login", "refused")] * 4 + [
        ("login", "rate_limited")
    ] * 2 + [("run", "denied")]
    assert {e.actor for e in events[:6]} == {"evil\\x00user"}
    assert events[-1].target == "db\\x00main"
    for event in events:
        assert_stored_clean(event)
