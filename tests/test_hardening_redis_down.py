"""SPEC: Audit: when Redis (the rate limits' cache) is down, requests get a 503 (JSON on
API paths) and are still audited under the token's, session's or typed user.

A real redis-server holds the counters with the cache settings the served console
uses; it is shut down in the middle of each test, so the first request shows the
limiter really counted in Redis before it went away.
"""

import json
import runpy
import socket
import time

import pytest
import redis
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from tests.api_support import API, assert_json_error, bearer, run_body
from tests.conftest import ROOT, write_numbered
from tests.test_console_support import PASSWORD, current_plan_hash, make_user

pytestmark = pytest.mark.django_db(transaction=True)

UNAVAILABLE = "rate limiter unavailable"


def served_caches(monkeypatch, url: str) -> dict:
    """CACHES exactly as settings.py builds it for ``REDIS_URL=url``."""
    monkeypatch.setenv("REDIS_URL", url)
    return runpy.run_path(str(ROOT / "migration_console" / "settings.py"))["CACHES"]


@pytest.fixture
def limiter(redis_url, settings, monkeypatch) -> redis.Redis:
    settings.CACHES = served_caches(monkeypatch, redis_url)
    return redis.Redis.from_url(redis_url)


def stop(server: redis.Redis) -> None:
    server.shutdown(nosave=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.ping()
        except redis.ConnectionError:
            return
        assert time.monotonic() < deadline, "redis-server did not stop"
        time.sleep(0.05)


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


def test_it_answers_api_reads_and_runs_with_503_json_audited_under_the_tokens_user(
    pending, limiter
):
    issued = token_create(user=make_user("superuser", username="root"))
    client = Client()
    assert client.get(API + "status", headers=bearer(issued.raw)).status_code == 200
    assert limiter.keys("*"), "the counter is not in Redis"

    stop(limiter)
    status = client.get(API + "status", headers=bearer(issued.raw))
    run = client.post(
        API + "run", run_body(), content_type="application/json", headers=bearer(issued.raw)
    )

    for response in (status, run):
        body = assert_json_error(response, 503, UNAVAILABLE)
        assert "try again" in body["message"]
        assert "redis://" not in json.dumps(body)
    assert not pending.table_exists("t1") and not Run.objects.exists()
    assert rows() == [
        ("api", "status", "error", "db_main", "root"),
        ("api", "run", "error", "db_main", "root"),
    ]
    for event in AuditEvent.objects.all():
        assert event.user.username == "root"
        assert event.token_prefix == issued.token.prefix
        assert event.client_ip == "127.0.0.1"
        assert UNAVAILABLE in event.message


def test_it_audits_api_requests_without_a_valid_token_as_who_they_claim_to_be(pending, limiter):
    stop(limiter)

    anonymous = Client().get(API + "history")
    forged = Client().post(
        API + "run", run_body(), content_type="application/json", headers=bearer("mc_" + "0" * 60)
    )

    assert_json_error(anonymous, 503, UNAVAILABLE)
    assert_json_error(forged, 503, UNAVAILABLE)
    assert rows() == [
        ("api", "history", "error", "db_main", "anonymous"),
        ("api", "run", "error", "db_main", "anonymous"),
    ]


def test_it_answers_a_session_api_run_with_503_json_under_the_sessions_user(pending, limiter):
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    stop(limiter)

    response = client.post(API + "run", run_body(), content_type="application/json")

    assert_json_error(response, 503, UNAVAILABLE)
    assert rows() == [("api", "run", "error", "db_main", "root")]
    assert not Run.objects.exists()


def test_it_answers_a_console_login_with_a_plain_503_audited_under_the_typed_name(db, limiter):
    make_user("superuser", username="root")
    client = Client()
    form = {"username": "root", "password": "wrong guess"}
    assert client.post("/admin/login/", form).status_code == 200

    stop(limiter)
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert b"try again" in response.content and b"<" not in response.content
    assert "_auth_user_id" not in client.session
    assert rows() == [
        ("console", "login", "denied", "", "root"),
        ("console", "login", "error", "", "root"),
    ]
    assert UNAVAILABLE in AuditEvent.objects.order_by("id").last().message


def test_it_answers_a_console_run_with_a_plain_503_audited_under_the_sessions_user(
    pending, limiter
):
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    plan_hash = current_plan_hash()
    stop(limiter)

    response = client.post(
        "/admin/console/targets/db_main/run/",
        {"confirm_database": "db_main", "plan_hash": plan_hash},
    )

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert rows() == [("console", "run", "error", "db_main", "root")]
    assert not Run.objects.exists() and not pending.table_exists("t1")


@pytest.mark.parametrize(
    ("path", "form", "row"),
    [
        (
            "/admin/console/targets/db_main/run/",
            {"confirm_database": "db_main"},
            ("console", "run", "error", "db_main", "root"),
        ),
        (
            "/admin/login/",
            {"username": "who", "password": "x"},
            ("console", "login", "error", "", "who"),
        ),
    ],
)
def test_a_post_failing_csrf_while_redis_is_down_is_a_503_and_one_row(
    path, form, row, pending, limiter
):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("superuser", username="root"))
    stop(limiter)

    response = client.post(path, form)

    assert response.status_code == 503
    assert rows() == [row]
    assert "CSRF" in AuditEvent.objects.get().message


def test_a_redis_that_accepts_connections_but_never_answers_is_refused_within_seconds(
    pending, settings, monkeypatch
):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes each handshake; nothing ever replies
    try:
        port = silent.getsockname()[1]
        settings.CACHES = served_caches(monkeypatch, f"redis://127.0.0.1:{port}/0")
        issued = token_create(user=make_user("superuser", username="root"))

        started = time.monotonic()
        response = Client().get(API + "status", headers=bearer(issued.raw))
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert_json_error(response, 503, UNAVAILABLE)
    assert elapsed < 4, f"a silent Redis held the request {elapsed:.1f}s"
    assert rows() == [("api", "status", "error", "db_main", "root")]
