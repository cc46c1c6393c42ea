"""Refusals that used to leave no audit row (SPEC: Audit): CSRF failures, unknown
console targets, failed logins, console read denials and refused /metrics scrapes.
Each is one row, with the real client IP."""

import pytest
from django.test import Client

from migration_console.core.models import AuditEvent, Run
from tests.conftest import write_numbered
from tests.test_console_support import (  # noqa: F401 - fixtures
    PASSWORD,
    _fresh_rate_limits,
    current_plan_hash,
    make_user,
)

pytestmark = pytest.mark.django_db(transaction=True)

CONSOLE = "/admin/console/targets/"
CHANGING_POSTS = [
    ("run", "db_main/run/"),
    ("rollback", "db_main/rollback/confirm/"),
    ("baseline", "db_main/baseline/confirm/"),
    ("repair", "db_main/repair/confirm/"),
]


def rows() -> list[tuple]:
    return list(
        AuditEvent.objects.order_by("id").values_list(
            "channel", "action", "outcome", "target", "actor"
        )
    )


@pytest.fixture
def pending(target):
    write_numbered(target, 1)
    return target


def csrf_client(kind: str = "superuser") -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(kind, username=kind))
    return client


# --- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "path"), CHANGING_POSTS)
def test_a_console_post_failing_csrf_is_a_denied_row(action, path, pending):
    response = csrf_client().post(
        CONSOLE + path, {"confirm_database": "db_main", "plan_hash": current_plan_hash()}
    )

    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert rows() == [("console", action, "denied", "db_main", "superuser")]
    event = AuditEvent.objects.get()
    assert "CSRF" in event.message and event.client_ip == "127.0.0.1"
    assert not Run.objects.exists()
    assert pending.tracking() == {}


def test_a_post_failing_csrf_to_a_hostile_target_is_still_one_clean_row(pending):
    response = csrf_client().post(CONSOLE + "db%00main/run/", {"confirm_database": "x"})

    assert response.status_code == 403
    assert rows() == [("console", "run", "denied", "db\\x00main", "superuser")]


def test_a_session_post_failing_csrf_under_the_api_path_is_json_and_a_row(pending):
    response = csrf_client().post("/admin/migrations/nope", {"x": "1"})

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "forbidden"
    assert rows() == [("console", "post", "denied", "", "superuser")]


def test_posts_failing_csrf_count_against_the_run_limit(pending, settings):
    settings.CONSOLE_RUN_RATE = "3/h"
    client = csrf_client()

    codes = [
        client.post(CONSOLE + path, {"confirm_database": "db_main"}).status_code
        for _, path in CHANGING_POSTS + CHANGING_POSTS[:1]
    ]
    # and a POST with a valid token from the same address is over the limit too
    client.handler.enforce_csrf_checks = False
    valid = client.post(
        CONSOLE + "db_main/run/",
        {"confirm_database": "db_main", "plan_hash": current_plan_hash()},
    )

    assert codes == [403, 403, 403, 429, 429]
    assert valid.status_code == 429
    assert [outcome for _, _, outcome, _, _ in rows()] == ["denied"] * 3 + ["rate_limited"] * 3
    assert not Run.objects.exists()


def test_a_login_failing_csrf_is_a_row_and_counts_against_the_login_limit(db, settings):
    settings.CONSOLE_LOGIN_RATE = "2/h"
    make_user("superuser", username="root")
    client = Client(enforce_csrf_checks=True)

    codes = [
        client.post("/admin/login/", {"username": "root", "password": PASSWORD}).status_code
        for _ in range(3)
    ]

    assert codes == [403, 403, 429]
    assert rows() == [
        ("console", "login", "denied", "", "root"),
        ("console", "login", "denied", "", "root"),
        ("console", "login", "rate_limited", "", "root"),
    ]
    assert "_auth_user_id" not in client.session


# --- unknown targets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ("run", "nope/run/"),
        ("rollback", "nope/rollback/confirm/"),
        ("baseline", "db_other/baseline/confirm/"),
        ("repair", "nope/repair/confirm/"),
    ],
)
def test_a_superusers_post_to_an_unknown_target_is_a_404_and_a_refused_row(action, path, pending):
    client = Client()
    client.force_login(make_user("superuser"))

    response = client.post(CONSOLE + path, {"confirm_database": "nope", "version": "001"})

    assert response.status_code == 404
    name = path.split("/")[0]
    assert rows() == [("console", action, "refused", name, "superuser")]
    assert "unknown database" in AuditEvent.objects.get().message
    assert not Run.objects.exists()


@pytest.mark.parametrize("page", ["", "plan/", "history/", "rollback/", "repair/"])
def test_a_read_of_an_unknown_target_is_a_404_and_a_refused_row(page, pending):
    client = Client()
    client.force_login(make_user("staff_view"))

    response = client.get(f"{CONSOLE}nope/{page}")

    assert response.status_code == 404
    assert rows() == [("console", "view", "refused", "nope", "staff_view")]


# --- logins ----------------------------------------------------------------------------------


def test_a_wrong_password_is_a_denied_row_with_the_client_ip(db, settings):
    settings.CONSOLE_TRUSTED_PROXIES = ["127.0.0.1/32"]
    make_user("superuser", username="root")
    client = Client()

    response = client.post(
        "/admin/login/",
        {"username": "root", "password": "wrong guess"},
        HTTP_X_FORWARDED_FOR="10.9.9.9, 192.0.2.7",
    )

    assert response.status_code == 200  # the form again, with its error
    assert rows() == [("console", "login", "denied", "", "root")]
    event = AuditEvent.objects.get()
    assert event.client_ip == "192.0.2.7"
    assert "wrong guess" not in event.message and "password" in event.message


@pytest.mark.parametrize(
    "form",
    [
        {"username": "nobody-here", "password": "x"},
        {"username": "root", "password": ""},
        {"username": "", "password": ""},
        {"username": "r" * 300, "password": "x"},
        {"username": "plain", "password": PASSWORD},  # right password, not staff
    ],
)
def test_every_refused_login_form_is_exactly_one_row(form, db):
    make_user("superuser", username="root")
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("plain", password=PASSWORD)

    response = Client().post("/admin/login/", form)

    assert response.status_code == 200
    events = list(AuditEvent.objects.all())
    assert [(e.action, e.outcome) for e in events] == [("login", "denied")]
    assert events[0].actor == (form["username"][:150] or "anonymous")


def test_a_successful_login_writes_no_refusal(db):
    make_user("superuser", username="root")

    response = Client().post(
        "/admin/login/?next=/admin/console/", {"username": "root", "password": PASSWORD}
    )

    assert response.status_code == 302
    assert not AuditEvent.objects.filter(outcome__in=["denied", "refused"]).exists()


# --- console reads and /metrics ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "named"),
    [
        ("staff_no_perm", "/admin/console/", ""),
        ("staff_no_perm", "/admin/console/targets/db_main/", "db_main"),
        ("staff_no_perm", "/admin/console/targets/db_main/rollback/", "db_main"),
        ("staff_view", "/admin/console/audit/", ""),
        ("staff_view", "/admin/console/audit/export.csv", ""),
    ],
)
def test_a_console_read_denial_is_a_row(kind, path, named, pending):
    client = Client()
    client.force_login(make_user(kind, username=kind))

    response = client.get(path)

    assert response.status_code == 403
    assert rows() == [("console", "view", "denied", named, kind)]
    assert path in AuditEvent.objects.get().message


def test_an_anonymous_read_is_sent_to_the_login_without_a_row(pending):
    response = Client().get("/admin/console/targets/db_main/")

    assert response.status_code == 302
    assert rows() == []


def test_a_refused_metrics_scrape_is_a_row(pending, settings):
    settings.CONSOLE_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    response = Client().get("/metrics", HTTP_X_FORWARDED_FOR="10.1.1.1")

    assert response.status_code == 403
    assert rows() == [("api", "metrics", "denied", "", "anonymous")]
    event = AuditEvent.objects.get()
    assert event.client_ip == "127.0.0.1"
    assert "not in CONSOLE_ALLOWED_NETWORKS" in event.message


def test_an_allowed_metrics_scrape_writes_no_row(pending):
    assert Client().get("/metrics").status_code == 200
    assert rows() == []
