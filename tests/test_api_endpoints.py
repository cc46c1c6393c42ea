"""The JSON API's answers for callers that are allowed: shapes and codes as in SPEC."""

import json

import psycopg
import pytest
from django.core.cache import cache
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.locking import lock_key
from tests.api_support import API, assert_json_error, bearer, run_body
from tests.conftest import write_numbered

pytestmark = pytest.mark.django_db(transaction=True)  # runs are jobs: a worker reads them


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")


@pytest.fixture
def token(root) -> str:
    return token_create(user=root, name="tests").raw


@pytest.fixture
def api(client, token, lazy_worker):
    """GET/POST with the superuser's token; the first POST starts a worker."""

    class Api:
        def get(self, endpoint, **extra):
            return client.get(API + endpoint, headers=bearer(token), **extra)

        def post(self, endpoint, body=None, **extra):
            lazy_worker()
            return client.post(
                API + endpoint,
                data=run_body() if body is None else body,
                content_type="application/json",
                headers=bearer(token),
                **extra,
            )

    return Api()


def test_status_answers_the_seed_shape_with_durations_in_nanoseconds(api, target):
    write_numbered(target, 2)
    assert api.post("run").status_code == 200
    target.write("003_t3.sql", "CREATE TABLE t3 (id int);\n")

    response = api.get("status")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["database"] == "db_main"
    assert (body["total"], body["pending_count"], body["applied_count"]) == (3, 1, 2)
    assert [m["version"] for m in body["all_migrations"]] == ["001", "002", "003"]
    assert [m["version"] for m in body["pending_migrations"]] == ["003"]
    applied = body["applied_migrations"][0]
    assert set(applied) >= {"version", "name", "status", "applied_at", "duration", "checksum"}
    assert applied["status"] == "completed"
    assert isinstance(applied["duration"], int) and applied["duration"] > 1000
    pending = body["pending_migrations"][0]
    assert (pending["status"], pending["applied_at"], pending["duration"]) == (
        "pending",
        None,
        None,
    )
    assert body["lock_holder"] is None


def test_run_applies_pending_migrations_and_then_reports_up_to_date(api, target, root):
    write_numbered(target, 2)

    response = api.post("run")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "success"
    assert body["applied_count"] == 2
    assert [m["version"] for m in body["applied_migrations"]] == ["001", "002"]
    assert all(m["status"] == "completed" and m["duration"] > 0 for m in body["applied_migrations"])
    assert target.table_exists("t2")
    assert target.scalar("SELECT applied_by FROM schema_migrations WHERE version = '001'") == "root"

    again = api.post("run")
    assert again.status_code == 200
    assert again.json() == {"status": "up_to_date", "message": "no pending migrations"}

    events = list(AuditEvent.objects.filter(channel="api", action="run").order_by("id"))
    assert [e.outcome for e in events] == ["success", "up_to_date"]
    assert events[0].migrations == ["001", "002"]
    assert events[0].token_prefix.startswith("mc_") and events[0].user == root
    assert str(events[0].client_ip) == "127.0.0.1"
    assert list(Run.objects.values_list("channel", flat=True)) == ["api", "api"]


def test_a_failed_migration_is_a_500_with_the_database_message_and_version(api, target):
    target.write("001_ok.sql", "CREATE TABLE t1 (id int);\n")
    target.write("002_bad.sql", "CREATE TABLE t2 (id int);\nSELECT * FROM no_such_table;\n")

    response = api.post("run")

    body = assert_json_error(response, 500, "migration failed")
    assert body["version"] == "002"
    assert 'relation "no_such_table" does not exist' in body["details"]
    assert [m["version"] for m in body["applied_migrations"]] == ["001"]
    assert target.table_exists("t1") and not target.table_exists("t2")
    assert target.tracking()["002"][0] == "failed"
    assert AuditEvent.objects.get(channel="api").outcome == "failed"


def test_it_answers_409_locked_naming_the_holder_when_another_run_holds_the_lock(
    api, target, settings
):
    settings.MIGRATION_LOCK_WAIT = 0.3
    write_numbered(target, 1)
    with psycopg.connect(target.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(target.dbname, "public")])
        holder_pid = holder.info.backend_pid

        response = api.post("run")

    body = assert_json_error(response, 409, "locked")
    assert body["holder"]["pid"] == holder_pid
    assert body["holder"]["user"] == "postgres"
    assert not target.table_exists("t1")
    assert AuditEvent.objects.get(channel="api").outcome == "locked"


def test_it_refuses_to_run_over_a_drifted_migration_with_409(api, target):
    write_numbered(target, 1)
    assert api.post("run").status_code == 200
    target.write("001_t1.sql", "CREATE TABLE t1 (id bigint);\n")
    target.write("002_t2.sql", "CREATE TABLE t2 (id int);\n")

    body = assert_json_error(api.post("run"), 409, "refused")

    assert body["reason"] == "drift" and body["versions"] == ["001"]
    assert not target.table_exists("t2")


def test_history_lists_recorded_migrations_newest_first(api, target):
    write_numbered(target, 3)
    api.post("run")
    target.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")

    response = api.get("history")

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3
    assert [m["version"] for m in body["migrations"]] == ["003", "002", "001"]
    assert all(isinstance(m["duration"], int) for m in body["migrations"])
    assert all(m["applied_at"] for m in body["migrations"])


def test_database_parameter_picks_the_target(api, make_target):
    make_target("db_main")
    other = make_target("db_other")
    write_numbered(other, 1)

    response = api.post("run?database=db_other")

    assert response.status_code == 200
    assert other.table_exists("t1")
    assert api.get("status?database=db_other").json()["database"] == "db_other"


def test_an_unreachable_target_is_a_503_without_its_dsn(api, settings, tmp_path):
    from migration_console.targets import TargetConfig

    settings.MIGRATION_TARGETS = {
        "db_down": TargetConfig(
            name="db_down",
            dsn="host=127.0.0.1 port=1 user=secretuser password=hunter2 dbname=x",
            schema="public",
            path=str(tmp_path),
        )
    }
    for response in (api.get("status?database=db_down"), api.post("run?database=db_down")):
        body = assert_json_error(response, 503, "database unavailable")
        assert "secretuser" not in json.dumps(body)


def test_a_superuser_session_may_read_and_run_with_csrf(root, target, worker):
    write_numbered(target, 1)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(root)
    assert browser.get(API + "status").status_code == 200

    csrf = "k" * 32
    browser.cookies["csrftoken"] = csrf
    response = browser.post(
        API + "run", run_body(), content_type="application/json", headers={"x-csrftoken": csrf}
    )

    assert response.status_code == 200, response.content
    assert target.table_exists("t1")
    event = AuditEvent.objects.get(channel="api", action="run")
    assert (event.actor, event.token_prefix, event.outcome) == ("root", "", "success")


def test_reads_are_rate_limited_far_less_tightly_than_runs(api, target, settings):
    settings.MIGRATION_API_RATE_READ = "5/m"
    settings.MIGRATION_API_RATE_RUN = "2/m"

    assert [api.post("run").status_code for _ in range(3)] == [200, 200, 429]
    assert [api.get("history").status_code for _ in range(6)] == [200] * 5 + [429]

    limited = assert_json_error(api.post("run"), 429, "rate limited")
    assert "slow down" in limited["message"]
    outcomes = AuditEvent.objects.filter(outcome="rate_limited")
    assert {e.action for e in outcomes} == {"run", "history"}


def test_the_openapi_document_is_served_without_a_token(client):
    response = client.get(API + "openapi.json")

    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {
        API + "status",
        API + "run",
        API + "rollback",
        API + "history",
        API + "openapi.json",
    }
