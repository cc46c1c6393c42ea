"""Hostile input to the JSON API: each case gets the right code, a JSON body, an audit
row where one is due, and nothing runs."""

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.tokens import token_create, token_revoke
from migration_console.core.models import AuditEvent
from tests.api_support import API, assert_json_error, assert_nothing_ran, bearer, run_body
from tests.conftest import write_numbered

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pending(target):
    """A target with one pending migration that must never be applied here."""
    write_numbered(target, 1)
    return target


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")


@pytest.fixture
def root_token(root) -> str:
    return token_create(user=root).raw


def post_run(client, headers=None, body=None, path="run", **extra):
    return client.post(
        API + path,
        data=run_body() if body is None else body,
        content_type="application/json",
        headers=headers or {},
        **extra,
    )


# --- who: 401 and 403, on every endpoint, each an audit row ----------------------


def _staff_token(users):
    staff = users.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    return token_create(user=staff).raw


def _expired_token(users):
    admin = users.objects.create_superuser("old", password="pw-old-1")
    return token_create(user=admin, expires_in=timedelta(seconds=-1)).raw


def _revoked_token(users):
    admin = users.objects.create_superuser("gone", password="pw-gone-1")
    issued = token_create(user=admin)
    token_revoke(token=issued.token)
    return issued.raw


def _deactivated_users_token(users):
    admin = users.objects.create_superuser("left", password="pw-left-1")
    raw = token_create(user=admin).raw
    admin.is_active = False
    admin.save()
    return raw


def _wrong_secret(users):
    admin = users.objects.create_superuser("guess", password="pw-guess-1")
    raw = token_create(user=admin).raw
    return raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")


AUTH_CASES = {
    "no header": (None, 401, "anonymous"),
    "garbage bearer": (lambda users: "garbage", 401, "anonymous"),
    "empty bearer": (lambda users: "", 401, "anonymous"),
    "right prefix, wrong secret": (_wrong_secret, 401, "anonymous"),
    "staff non-superuser": (_staff_token, 403, "staff"),
    "expired token": (_expired_token, 401, "old"),
    "revoked token": (_revoked_token, 401, "gone"),
    "deactivated user's token": (_deactivated_users_token, 401, "left"),
}


@pytest.mark.parametrize("case", list(AUTH_CASES))
def test_it_refuses_callers_without_a_valid_superuser_token(
    case, client, pending, django_user_model
):
    make, status, actor = AUTH_CASES[case]
    headers = {} if make is None else bearer(make(django_user_model))
    for endpoint in ("run", "status", "history"):
        if endpoint == "run":
            response = post_run(client, headers)
        else:
            response = client.get(API + endpoint, headers=headers)

        error = "unauthorized" if status == 401 else "forbidden"
        body = assert_json_error(response, status, error)
        assert body["message"]
        if status == 401:
            assert response["WWW-Authenticate"].startswith("Bearer")
        event = AuditEvent.objects.latest("id")
        assert (event.channel, event.action, event.outcome) == ("api", endpoint, "denied")
        assert event.actor == actor
        assert str(event.client_ip) == "127.0.0.1"
        if actor != "anonymous":
            assert event.token_prefix.startswith("mc_")
    assert AuditEvent.objects.count() == 3
    assert_nothing_ran(pending)


def test_it_refuses_a_basic_auth_header_and_a_token_in_the_query_string(
    client, pending, root_token
):
    basic = post_run(client, {"authorization": "Basic cm9vdDpwdw=="})
    assert_json_error(basic, 401, "unauthorized")
    in_query = post_run(client, path=f"run?token={root_token}&access_token={root_token}")
    assert_json_error(in_query, 401, "unauthorized")
    huge = post_run(client, {"authorization": "Bearer " + "x" * 20000})
    assert_json_error(huge, 401, "unauthorized")
    assert_nothing_ran(pending)
    assert AuditEvent.objects.filter(outcome="denied").count() == 3


def test_it_refuses_a_valid_token_from_an_ip_outside_the_allowed_networks(
    client, pending, root_token
):
    response = post_run(client, bearer(root_token), REMOTE_ADDR="203.0.113.9")

    body = assert_json_error(response, 403, "forbidden")
    assert "CONSOLE_ALLOWED_NETWORKS" in body["message"]
    assert_nothing_ran(pending)
    event = AuditEvent.objects.get()
    assert (event.outcome, str(event.client_ip), event.actor) == ("denied", "203.0.113.9", "root")
    read = client.get(API + "status", headers=bearer(root_token), REMOTE_ADDR="203.0.113.9")
    assert_json_error(read, 403, "forbidden")


def test_a_spoofed_x_forwarded_for_does_not_make_an_outside_ip_allowed(
    client, pending, root_token, settings
):
    spoofed = {**bearer(root_token), "x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1"}
    response = post_run(client, spoofed, REMOTE_ADDR="203.0.113.9")
    assert_json_error(response, 403, "forbidden")

    # Behind a trusted proxy, only the entry the proxy appended counts, not a forged one.
    settings.CONSOLE_TRUSTED_PROXIES = ["10.0.0.0/8"]
    forged = {**bearer(root_token), "x-forwarded-for": "127.0.0.1, 203.0.113.9"}
    response = post_run(client, forged, REMOTE_ADDR="10.0.0.2")
    assert_json_error(response, 403, "forbidden")

    assert_nothing_ran(pending)
    assert [str(e.client_ip) for e in AuditEvent.objects.order_by("id")] == [
        "203.0.113.9",
        "203.0.113.9",
    ]


def test_a_session_post_without_csrf_is_refused(root, pending):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(root)

    response = post_run(browser)

    body = assert_json_error(response, 403, "forbidden")
    assert "CSRF" in body["message"]
    assert_nothing_ran(pending)
    assert AuditEvent.objects.get().outcome == "denied"


def test_a_staff_session_may_not_use_the_api(django_user_model, pending):
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    browser = Client()
    browser.force_login(staff)

    assert_json_error(browser.get(API + "status"), 403, "forbidden")
    assert_json_error(post_run(browser), 403, "forbidden")
    assert_nothing_ran(pending)


# --- what: bad bodies are 400 naming the problem, and every run request is audited ----


BAD_BODIES = {
    "missing confirm": ("{}", "confirm"),
    "confirm false": ('{"confirm": false}', "confirm"),
    'confirm "true" string': ('{"confirm": "true"}', "confirm"),
    "confirm 1": ('{"confirm": 1}', "confirm"),
    "confirm null": ('{"confirm": null}', "confirm"),
    "confirm in a list": ('[{"confirm": true}]', "object"),
    "malformed JSON": ('{"confirm": tru', "malformed"),
    "trailing garbage": ('{"confirm": true} x', "malformed"),
    "NaN": ('{"confirm": NaN}', "malformed"),
    "duplicate keys": ('{"confirm": false, "confirm": true}', "duplicate"),
    "unknown field": ('{"confirm": true, "allow_drift": true}', "allow_drift"),
    "empty body": ("", "empty"),
    "not UTF-8": (b'{"confirm": true, "x": "\xff"}', "UTF-8"),
    "nested too deeply": ("[" * 20000 + "]" * 20000, "malformed"),
    "1 MB body": ('{"confirm": true, "pad": "' + "x" * (1024 * 1024) + '"}', "exceeds"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_it_answers_400_naming_the_problem_for_a_bad_run_body(case, client, pending, root_token):
    body, named = BAD_BODIES[case]

    response = post_run(client, bearer(root_token), body=body)

    answer = assert_json_error(response, 400, "bad request")
    assert named in answer["message"]
    assert len(response.content) < 2000
    assert_nothing_ran(pending)
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.actor) == ("run", "refused", "root")
    assert event.token_prefix.startswith("mc_")


def test_an_oversized_body_from_a_caller_who_may_not_run_is_a_denial_not_parsed(
    client, pending, django_user_model
):
    huge = "[" * (2 * 1024 * 1024)
    assert_json_error(post_run(client, body=huge), 401, "unauthorized")
    staff = bearer(_staff_token(django_user_model))
    assert_json_error(post_run(client, staff, body=huge), 403, "forbidden")
    assert_nothing_ran(pending)
    assert [e.outcome for e in AuditEvent.objects.all()] == ["denied", "denied"]


SQL_LOOKING = [
    "db_main'; DROP TABLE schema_migrations; --",
    "db_main OR 1=1",
    "../../etc/passwd",
    "default",
    "",
    "x" * 500,
    "db_main\x00",
    "%00",
]


@pytest.mark.parametrize("database", SQL_LOOKING)
def test_unknown_or_sql_looking_databases_are_404(database, client, pending, root_token):
    for response in (
        post_run(client, bearer(root_token), QUERY_STRING=_query(database)),
        client.get(API + "status", {"database": database}, headers=bearer(root_token)),
        client.get(API + "history", {"database": database}, headers=bearer(root_token)),
    ):
        body = assert_json_error(response, 404, "unknown database")
        assert len(body["message"]) < 120
    assert_nothing_ran(pending)
    assert pending.table_exists("schema_migrations") is False
    # SPEC: Audit: a refusal for an unknown target is a row, reads included
    events = AuditEvent.objects.order_by("id")
    assert [(e.action, e.outcome) for e in events] == [
        ("run", "refused"),
        ("status", "refused"),
        ("history", "refused"),
    ]
    assert all(len(e.target) <= 128 and "\x00" not in e.target for e in events)


def _query(database: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"database": database})


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options"])
def test_other_methods_on_run_are_405_json_and_audited(method, client, pending, root_token):
    response = getattr(client, method)(API + "run", headers=bearer(root_token))

    body = assert_json_error(response, 405, "method not allowed")
    assert response["Allow"] == "POST"
    assert "POST" in body["message"]
    assert_nothing_ran(pending)
    assert AuditEvent.objects.get().outcome == "refused"


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_writes_to_read_endpoints_are_405(method, client, pending, root_token):
    for endpoint in ("status", "history", "openapi.json"):
        response = getattr(client, method)(API + endpoint, headers=bearer(root_token))
        assert_json_error(response, 405, "method not allowed")
        assert response["Allow"] == "GET, HEAD"
    assert_nothing_ran(pending)


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    "path",
    ["nope", "status/", "run/", "", "../admin/", "status.json", "run%00", "openapi.yaml"],
)
def test_unknown_paths_under_the_api_are_json_404s(path, debug, client, settings, root_token):
    settings.DEBUG = debug
    response = client.get("/admin/migrations/" + path, headers=bearer(root_token))
    if path == "../admin/":  # normalised by the client to /admin/: not the API any more
        return
    assert_json_error(response, 404, "not found")
    assert_json_error(client.get("/admin/migrations"), 404, "not found")


@pytest.mark.parametrize("debug", [True, False])
def test_an_unexpected_failure_is_a_json_500_without_a_traceback(
    debug, client, pending, root_token, settings, monkeypatch
):
    from migration_console.api import views

    settings.DEBUG = debug

    def explode(*args, **kwargs):
        raise RuntimeError("boom at /secret/path with password=hunter2")

    monkeypatch.setattr(views, "target_status", explode)
    monkeypatch.setattr(views, "target_status_answer", explode)
    monkeypatch.setattr(views, "run_start", explode)

    body = assert_json_error(client.get(API + "status", headers=bearer(root_token)), 500)
    assert body == {"error": "internal error", "message": "the server failed; see its log"}
    assert_json_error(post_run(client, bearer(root_token)), 500, "internal error")
    assert "boom" not in json.dumps(body)


def test_a_request_refused_before_any_view_is_still_json_on_api_paths(client, settings):
    settings.DEBUG = False

    response = client.get(API + "status", HTTP_HOST="evil.example")

    assert_json_error(response, 400, "bad request")
    page = client.get("/admin/login/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")
