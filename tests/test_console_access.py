"""Who may see and run what in the console: the permission matrix, CSRF, read-only admin."""

import pytest
from django.test import Client

from migration_console.core.models import AuditEvent, Run
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    current_plan_hash,
    make_user,
    run_id_from,
    wait_for_run,
)

pytestmark = pytest.mark.django_db(transaction=True)

DENIED_IP = "192.0.2.44"  # TEST-NET-1: outside the default 127.0.0.1/32,::1/128
STATUS_URL = "/admin/console/targets/db_main/"
PLAN_URL = "/admin/console/targets/db_main/plan/"
RUN_URL = "/admin/console/targets/db_main/run/"

ROLES = ["anonymous", "staff_no_perm", "staff_view", "superuser_denied_ip", "superuser"]


def client_for(role: str) -> tuple[Client, dict]:
    client = Client()
    extra = {}
    if role != "anonymous":
        kind = "superuser" if role.startswith("superuser") else role
        client.force_login(make_user(kind, username=role))
    if role == "superuser_denied_ip":
        extra["REMOTE_ADDR"] = DENIED_IP
    return client, extra


GET_EXPECTED = {
    "anonymous": 302,
    "staff_no_perm": 403,
    "staff_view": 200,
    "superuser_denied_ip": 200,
    "superuser": 200,
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "url",
    [
        "/admin/console/",
        STATUS_URL,
        PLAN_URL,
        "/admin/console/targets/db_main/history/",
    ],
)
def test_it_answers_each_role_on_read_pages(role, url, target):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    client, extra = client_for(role)

    response = client.get(url, **extra)

    assert response.status_code == GET_EXPECTED[role]
    if role == "anonymous":
        assert response["Location"].startswith("/admin/login/?next=")
    body = response.content.decode()
    # Only an allowed superuser ever gets a working way to run (status link, plan form).
    has_run_way = 'id="review-plan"' in body or 'name="confirm_database"' in body
    assert has_run_way == (role == "superuser" and url in (STATUS_URL, PLAN_URL))
    if role in ("staff_view", "superuser_denied_ip") and url in (STATUS_URL, PLAN_URL):
        assert 'id="run-unavailable"' in body
        assert "<form" not in body.split('id="content-main"')[1]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.usefixtures("console_env")
def test_it_runs_only_for_an_allowed_superuser_and_audits_every_denied_post(role, target):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    plan_hash = current_plan_hash()
    client, extra = client_for(role)

    response = client.post(
        RUN_URL, {"plan_hash": plan_hash, "confirm_database": "db_main"}, **extra
    )

    if role == "superuser":
        assert response.status_code == 303
        run = wait_for_run(run_id_from(response))
        assert run.state == Run.State.SUCCESS, run.message
        assert run.channel == "console" and run.requested_by == "superuser"
        assert target.table_exists("first_table")
        assert AuditEvent.objects.filter(run=run, outcome="success").count() == 1
        return

    expected = {
        "anonymous": 302,
        "staff_no_perm": 403,
        "staff_view": 403,
        "superuser_denied_ip": 403,
    }[role]
    assert response.status_code == expected
    assert not Run.objects.exists()
    assert not target.table_exists("first_table")
    assert target.tracking() == {}
    event = AuditEvent.objects.get()
    assert (event.outcome, event.action, event.channel, event.target) == (
        "denied",
        "run",
        "console",
        "db_main",
    )
    assert event.actor == ("anonymous" if role == "anonymous" else role)
    assert event.client_ip == (DENIED_IP if role == "superuser_denied_ip" else "127.0.0.1")
    if role == "superuser_denied_ip":
        assert DENIED_IP in event.message


def test_it_refuses_a_post_without_a_csrf_token(target):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("superuser"))

    response = client.post(
        RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"}
    )

    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert not Run.objects.exists()
    assert not target.table_exists("first_table")


def test_it_keeps_runs_and_audit_events_read_only_in_the_admin(target):
    client = Client()
    client.force_login(make_user("superuser"))
    run = Run.objects.create(target="db_main", channel="cli", requested_by="ops")
    event = AuditEvent.objects.create(
        actor="ops", channel="cli", action="run", outcome="success", target="db_main"
    )

    for model, obj in (("run", run), ("auditevent", event)):
        base = f"/admin/core/{model}/"
        assert client.get(base).status_code == 200
        assert client.get(f"{base}add/").status_code == 403
        change = client.get(f"{base}{obj.pk}/change/")
        assert change.status_code == 200
        assert b'name="_save"' not in change.content
        assert client.post(f"{base}{obj.pk}/change/", {"actor": "mallory"}).status_code == 403
        assert client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.actor == "ops"
    assert Run.objects.filter(pk=run.pk).exists()


def test_it_keeps_the_audit_review_from_staff_who_only_read_migrations(target):
    client = Client()
    client.force_login(make_user("staff_view"))
    assert client.get("/admin/console/audit/").status_code == 403
    assert client.get("/admin/console/audit/export.csv").status_code == 403

    auditor = Client()
    auditor.force_login(make_user("staff_audit"))
    assert auditor.get("/admin/console/audit/").status_code == 200


def test_the_admin_home_links_to_the_console(db):
    client = Client()
    client.force_login(make_user("staff_view"))

    page = client.get("/admin/").content.decode()

    assert 'href="/admin/console/"' in page
    assert 'href="/admin/core/run/"' in page  # the read-only Runs list, by view permission
