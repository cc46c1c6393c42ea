"""migrate_sql rollback <version> against a real PostgreSQL."""

import json

import psycopg
import pytest

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.locking import lock_key
from migration_console.core.services.maintenance import maintenance_plan, migrations_rollback
from migration_console.core.services.targets import target_get
from tests.conftest import migrate_sql, write_numbered
from tests.test_console_support import console_env  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def write_downs(target, versions) -> None:
    for i in versions:
        target.write(f"{i:03d}_t{i}.down.sql", f"DROP TABLE t{i};\n")


@pytest.fixture
def five(target):
    write_numbered(target, 5)
    write_downs(target, range(1, 6))
    assert migrate_sql("run", "--yes")[0] == 0
    return target


def test_rolling_back_five_to_three_removes_three_to_five_and_keeps_one_and_two(five):
    code, out = migrate_sql("rollback", "003", "--yes")
    assert code == 0, out
    assert [five.table_exists(f"t{i}") for i in range(1, 6)] == [True, True, False, False, False]
    assert set(five.tracking()) == {"001", "002"}
    # newest first
    assert out.index("005_t5.down.sql") < out.index("004_t4.down.sql") < out.index("003_t3")
    assert "Rolled back 3 migration(s)" in out

    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert all(five.table_exists(f"t{i}") for i in range(1, 6))
    assert set(five.tracking()) == {"001", "002", "003", "004", "005"}


def test_a_missing_down_file_refuses_before_anything_runs_naming_it(five):
    (five.path / "004_t4.down.sql").unlink()
    before = five.tracking()
    code, out = migrate_sql("rollback", "003", "--yes")
    assert code == 2
    assert "004_t4.down.sql" in out
    assert "005_t5.down.sql" not in out.split("missing")[-1]
    assert all(five.table_exists(f"t{i}") for i in range(1, 6))
    assert five.tracking() == before
    event = AuditEvent.objects.get(action="rollback")
    assert event.outcome == "refused" and event.migrations == ["004"]


def test_the_refusal_is_audited_even_when_the_preview_finds_it(five):
    (five.path / "003_t3.down.sql").unlink()
    code, out = migrate_sql("rollback", "003")  # interactive path: preview first
    assert code == 2 and "003_t3.down.sql" in out
    run = Run.objects.get(action="rollback")
    assert run.state == "refused"
    assert AuditEvent.objects.get(action="rollback").outcome == "refused"


def test_a_failing_down_file_stops_keeps_its_row_and_exits_1(five):
    five.write("004_t4.down.sql", "DROP TABLE t4;\nDROP TABLE no_such_table;\n")
    code, out = migrate_sql("rollback", "003", "--yes")
    assert code == 1
    assert "no_such_table" in out
    assert not five.table_exists("t5") and "005" not in five.tracking()
    # 004's down ran in one transaction with its row deletion: all of it undone
    assert five.table_exists("t4") and five.tracking()["004"][0] == "completed"
    assert five.table_exists("t3") and "003" in five.tracking()
    run = Run.objects.get(action="rollback")
    assert run.state == "failed"
    assert [s["version"] for s in run.steps] == ["005", "004"]


def test_a_no_transaction_down_file_runs_statement_by_statement(target):
    target.write("001_t.sql", "CREATE TABLE t (id int);\n")
    target.write(
        "002_idx.sql", "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t_idx ON t (id);\n"
    )
    # DROP INDEX CONCURRENTLY refuses to run inside a transaction block
    target.write("002_idx.down.sql", "-- migrate:no-transaction\nDROP INDEX CONCURRENTLY t_idx;\n")
    assert migrate_sql("run", "--yes")[0] == 0
    code, out = migrate_sql("rollback", "002", "--yes")
    assert code == 0, out
    assert target.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 't_idx'") == 0
    assert set(target.tracking()) == {"001"}


def test_rollback_without_a_terminal_and_without_yes_exits_2_and_changes_nothing(five):
    code, out = migrate_sql("rollback", "004")
    assert code == 2
    assert "--yes" in out
    # the plan was shown before refusing
    assert "005_t5.down.sql" in out and "004_t4.down.sql" in out
    assert five.table_exists("t5") and "005" in five.tracking()


def test_a_confirmed_rollback_runs_and_a_declined_one_does_not(five, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out = migrate_sql("rollback", "005")
    assert code == 2 and "aborted" in out
    assert five.table_exists("t5")

    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out = migrate_sql("rollback", "005")
    assert code == 0, out
    assert not five.table_exists("t5") and five.table_exists("t4")


def test_a_plan_changed_after_confirmation_is_refused(five):
    target = target_get("db_main")
    plan = maintenance_plan(action="rollback", target=target, version="004")
    five.write("005_t5.down.sql", "DROP TABLE t5 CASCADE;\n")
    with pytest.raises(Exception, match="changed since"):
        migrations_rollback(
            target=target,
            to_version="004",
            actor="tester",
            channel="cli",
            expected_plan_hash=plan.plan_hash,
        )
    assert five.table_exists("t5")


def test_rollback_waits_for_the_advisory_lock_and_exits_3(five, settings):
    settings.MIGRATION_LOCK_WAIT = 0.3
    with psycopg.connect(five.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(five.dbname, "public")])
        code, out = migrate_sql("rollback", "003", "--yes")
    assert code == 3
    assert "locked" in out
    assert five.table_exists("t5")
    assert AuditEvent.objects.get(action="rollback").outcome == "locked"


def test_rollback_is_recorded_as_a_run_and_one_audit_row(five):
    assert migrate_sql("rollback", "004", "--yes")[0] == 0
    run = Run.objects.get(action="rollback")
    assert run.state == "success" and run.channel == "cli"
    assert run.planned == ["005", "004"]
    events = AuditEvent.objects.filter(action="rollback")
    assert events.count() == 1
    assert events[0].outcome == "success" and events[0].migrations == ["005", "004"]
    assert events[0].run_id == run.pk


@pytest.mark.parametrize("version", ["006", "abc", "²", "9" * 100])
def test_an_unknown_or_malformed_version_exits_2(five, version):
    code, out = migrate_sql("rollback", version, "--yes")
    assert code == 2
    assert version in out
    assert five.table_exists("t5")


def test_rollback_without_a_version_exits_2(five):
    code, out = migrate_sql("rollback", "--yes")
    assert code == 2 and "needs a version" in out


def test_json_output_names_the_rolled_back_migrations(five):
    code, out = migrate_sql("rollback", "004", "--yes", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "success" and data["action"] == "rollback"
    assert [m["version"] for m in data["migrations"]] == ["005", "004"]


# --- JSON API: POST /admin/migrations/rollback -------------------------------------------


@pytest.fixture
def api_post(client, django_user_model, lazy_worker):
    from django.core.cache import cache

    from accounts.tokens import token_create

    cache.clear()  # rate limits
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    raw = token_create(user=root, name="tests").raw

    def post(body, token=raw):
        lazy_worker()  # the API queues the rollback for a worker
        return client.post(
            "/admin/migrations/rollback",
            data=json.dumps(body),
            content_type="application/json",
            headers={"authorization": f"Bearer {token}"},
        )

    yield post
    cache.clear()


def test_the_api_rolls_back_with_confirm_and_a_version(five, api_post):
    response = api_post({"confirm": True, "to": "004"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["status"] == "success" and data["count"] == 2
    assert [m["version"] for m in data["migrations"]] == ["005", "004"]
    assert not five.table_exists("t4") and five.table_exists("t3")
    event = AuditEvent.objects.get(action="rollback")
    assert (event.channel, event.outcome, event.actor) == ("api", "success", "root")

    again = api_post({"confirm": True, "to": "004"}).json()
    assert again["status"] == "up_to_date" and again["count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"to": "003"},
        {"confirm": True},
        {"confirm": True, "to": "three"},
        {"confirm": True, "to": "²"},
        {"confirm": True, "to": ["003"]},
        {"confirm": 1, "to": "3"},
    ],
)
def test_the_api_answers_400_and_audits_without_confirm_or_a_good_version(five, api_post, body):
    response = api_post(body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "bad request"
    assert five.table_exists("t5")
    assert AuditEvent.objects.get(action="rollback").outcome != "success"


def test_the_api_answers_400_for_a_version_it_does_not_know(five, api_post):
    response = api_post({"confirm": True, "to": "042"})
    # Seen once as 409 under a concurrent benchmark, not reproduced: say why if again.
    assert response.status_code == 400, response.content
    assert "042" in response.json()["message"]
    assert AuditEvent.objects.get(action="rollback").outcome == "refused"


def test_the_api_answers_409_naming_a_missing_down_file(five, api_post):
    (five.path / "005_t5.down.sql").unlink()
    response = api_post({"confirm": True, "to": "003"})
    assert response.status_code == 409
    data = response.json()
    assert data["error"] == "refused" and data["reason"] == "missing_down"
    assert "005_t5.down.sql" in data["message"] and data["versions"] == ["005"]
    assert five.table_exists("t5")


def test_the_api_answers_500_with_the_database_message_when_a_down_file_fails(five, api_post):
    five.write("005_t5.down.sql", "DROP TABLE not_there;\n")
    response = api_post({"confirm": True, "to": "005"})
    assert response.status_code == 500
    data = response.json()
    assert data["error"] == "rollback failed" and data["version"] == "005"
    assert "not_there" in data["details"]


def test_a_staff_token_is_denied_403_and_the_attempt_audited(five, api_post, django_user_model):
    from accounts.tokens import token_create

    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    response = api_post({"confirm": True, "to": "003"}, token=token_create(user=staff).raw)
    assert response.status_code == 403
    assert five.table_exists("t5")
    event = AuditEvent.objects.get(action="rollback")
    assert event.outcome == "denied" and event.actor == "staff"


# --- console: review, type the database name and the version, run detached ------------------

ROLLBACK_URL = "/admin/console/targets/db_main/rollback/"
CONFIRM_URL = "/admin/console/targets/db_main/rollback/confirm/"


def superuser_client():
    from django.test import Client

    from tests.test_console_support import make_user

    client = Client()
    client.force_login(make_user("superuser", username="root"))
    return client


@pytest.fixture
def fresh_limits():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_the_status_page_offers_a_rollback_and_the_review_lists_the_down_files(five, fresh_limits):
    client = superuser_client()
    status = client.get("/admin/console/targets/db_main/").content.decode()
    assert 'id="rollback-actions"' in status and 'value="003"' in status
    page = client.get(ROLLBACK_URL, {"to": "004"}).content.decode()
    assert page.index("005_t5.down.sql") < page.index("004_t4.down.sql")
    assert "003_t3.down.sql" not in page
    assert 'name="confirm_database"' in page and 'name="confirm_version"' in page
    assert five.table_exists("t5")


@pytest.mark.parametrize(
    ("database", "version"), [("db_main", "003"), ("db_other", "004"), ("", "")]
)
def test_a_console_rollback_needs_both_the_database_name_and_the_version(
    five, fresh_limits, database, version
):
    client = superuser_client()
    plan = maintenance_plan(action="rollback", target=target_get("db_main"), version="004")
    response = client.post(
        CONFIRM_URL,
        {
            "version": "004",
            "plan_hash": plan.plan_hash,
            "confirm_database": database,
            "confirm_version": version,
        },
    )
    assert response.status_code == 400
    assert "Confirmation did not match" in response.content.decode()
    assert five.table_exists("t5") and not Run.objects.filter(action="rollback").exists()
    event = AuditEvent.objects.get(action="rollback")
    assert (event.channel, event.outcome) == ("console", "refused")


def test_a_console_rollback_refuses_a_plan_that_changed(five, fresh_limits):
    client = superuser_client()
    plan = maintenance_plan(action="rollback", target=target_get("db_main"), version="004")
    five.write("006_t6.sql", "CREATE TABLE t6 (id int);\n")
    response = client.post(
        CONFIRM_URL,
        {
            "version": "004",
            "plan_hash": plan.plan_hash,
            "confirm_database": "db_main",
            "confirm_version": "004",
        },
    )
    assert response.status_code == 409
    assert five.table_exists("t5")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("console_env")
def test_a_confirmed_console_rollback_runs_detached_and_is_audited(five, fresh_limits):
    from tests.test_console_support import run_id_from, wait_for_run

    client = superuser_client()
    plan = maintenance_plan(action="rollback", target=target_get("db_main"), version="004")
    response = client.post(
        CONFIRM_URL,
        {
            "version": "004",
            "plan_hash": plan.plan_hash,
            "confirm_database": "db_main",
            "confirm_version": "004",
        },
    )
    assert response.status_code == 303, response.content.decode()[:500]
    run = wait_for_run(run_id_from(response))
    assert run.action == "rollback" and run.state == "success", run.message
    assert run.channel == "console" and run.requested_by == "root"
    assert not five.table_exists("t5") and not five.table_exists("t4")
    assert five.table_exists("t3")
    event = AuditEvent.objects.get(action="rollback", run=run)
    assert event.outcome == "success" and event.migrations == ["005", "004"]
    page = client.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert "rolled back 2 migration(s)" in page
