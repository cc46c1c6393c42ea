"""Rate limits on login and run, and forged forwarding headers, in one process.

A client that is not a trusted proxy may send any X-Forwarded-For / X-Real-IP:
it must not pass the allowlist, dodge a limit, or be what an audit row records.
"""

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client

from migration_console.core.models import AuditEvent, Run
from tests.test_console_support import (  # noqa: F401 - fixtures
    PASSWORD,
    _fresh_rate_limits,
    current_plan_hash,
    make_user,
)

pytestmark = pytest.mark.django_db(transaction=True)

RUN_URL = "/admin/console/targets/db_main/run/"
SPOOFED = "10.9.8.7"


def spoof(n: int = 0) -> dict:
    return {"HTTP_X_FORWARDED_FOR": f"10.9.8.{n}", "HTTP_X_REAL_IP": f"10.9.7.{n}"}


def test_a_forged_forwarded_for_does_not_pass_the_allowlist(target, settings):
    settings.CONSOLE_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    client = Client()
    client.force_login(make_user("superuser"))

    status_page = client.get("/admin/console/targets/db_main/", **spoof(7)).content.decode()
    response = client.post(
        RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"}, **spoof(7)
    )

    assert 'id="run-unavailable"' in status_page and "127.0.0.1" in status_page
    assert response.status_code == 403
    assert not Run.objects.exists()
    assert not target.table_exists("first_table")
    event = AuditEvent.objects.get()
    assert event.outcome == "denied"
    assert event.client_ip == "127.0.0.1"


def test_a_trusted_proxy_forwards_the_client_address(target, settings):
    settings.CONSOLE_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    settings.CONSOLE_TRUSTED_PROXIES = ["127.0.0.1/32"]
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    client = Client()
    client.force_login(make_user("superuser"))

    # the left entry is whatever the client claimed; our proxy appended the real peer
    page = client.get(
        "/admin/console/targets/db_main/", HTTP_X_FORWARDED_FOR="192.0.2.1, 10.1.2.3"
    ).content.decode()
    forged_left = client.get(
        "/admin/console/targets/db_main/", HTTP_X_FORWARDED_FOR="10.1.2.3, 192.0.2.1"
    ).content.decode()

    assert 'id="review-plan"' in page
    assert 'id="review-plan"' not in forged_left and "192.0.2.1" in forged_left


def test_the_run_limit_holds_whatever_forwarding_headers_say(target, settings):
    settings.CONSOLE_RUN_RATE = "3/h"
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    client = Client()
    client.force_login(make_user("staff_view"))

    codes = [
        client.post(RUN_URL, {"confirm_database": "db_main"}, **spoof(n)).status_code
        for n in range(6)
    ]

    assert codes == [403, 403, 403, 429, 429, 429]
    limited = AuditEvent.objects.filter(outcome="rate_limited")
    assert limited.count() == 3
    assert set(AuditEvent.objects.values_list("client_ip", flat=True)) == {"127.0.0.1"}
    assert not Run.objects.exists()


def test_the_login_limit_holds_whatever_forwarding_headers_say(db, settings):
    settings.CONSOLE_LOGIN_RATE = "3/h"
    make_user("superuser", username="root")
    client = Client()
    url = "/admin/login/?next=/admin/console/"

    wrong = [
        client.post(url, {"username": "root", "password": "guess"}, **spoof(n)).status_code
        for n in range(3)
    ]
    right = client.post(url, {"username": "root", "password": PASSWORD}, **spoof(9))

    assert wrong == [200, 200, 200]  # the form again, with its error
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    # each wrong password is a row of its own (SPEC: Audit), then the refused one
    assert AuditEvent.objects.filter(action="login", outcome="denied").count() == 3
    event = AuditEvent.objects.get(outcome="rate_limited")
    assert (event.action, event.outcome, event.actor, event.client_ip) == (
        "login",
        "rate_limited",
        "root",
        "127.0.0.1",
    )


def test_login_below_the_limit_works(db):
    make_user("superuser", username="root")
    client = Client()

    response = client.post(
        "/admin/login/?next=/admin/console/", {"username": "root", "password": PASSWORD}
    )

    assert response.status_code == 302 and response["Location"] == "/admin/console/"
    assert client.get("/admin/console/").status_code == 200


def test_auditlog_records_the_real_client_not_a_forged_header(db):
    admin = make_user("superuser", username="root")
    other = get_user_model().objects.create_user("operator", "op@example.test", PASSWORD)
    client = Client()
    client.force_login(admin)

    response = client.post(
        f"/admin/auth/user/{other.pk}/change/",
        {
            "username": "operator",
            "first_name": "Changed",
            "last_name": "",
            "email": "op@example.test",
            "is_active": "on",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
        },
        **spoof(3),
    )

    assert response.status_code == 302, response.content[:2000]
    entry = LogEntry.objects.get_for_object(other).latest("timestamp")
    assert "first_name" in entry.changes_dict
    assert entry.remote_addr == "127.0.0.1"
