"""Plan -> confirm -> run from the console: the binding to the plan, the detached runner,
its progress, the lock, failures, history and the audit review."""

import csv
import io
import re

import pytest
from django.test import Client

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.jobs import run_start
from migration_console.core.services.locking import lock_acquire
from migration_console.core.services.targets import target_connect, target_get
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    current_plan_hash,
    make_user,
    run_id_from,
    wait_for_run,
)

pytestmark = pytest.mark.django_db(transaction=True)

PLAN_URL = "/admin/console/targets/db_main/plan/"
CONSOLE_ROOT = Caller(actor="root", channel="console")
RUN_URL = "/admin/console/targets/db_main/run/"


@pytest.fixture
def admin_client_():
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    return client


def hash_on_page(response) -> str:
    match = re.search(r'name="plan_hash" value="([0-9a-f]+)"', response.content.decode())
    assert match, "the plan page carries no plan hash"
    return match.group(1)


def test_it_shows_each_pending_file_with_sql_checksum_and_mode(target, admin_client_):
    target.write("001_tables.sql", "CREATE TABLE a (id int);\n")
    target.write(
        "002_index.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
    )

    page = admin_client_.get(PLAN_URL).content.decode()

    assert "001_tables.sql" in page and "002_index.sql" in page
    assert "CREATE INDEX CONCURRENTLY a_id ON a (id);" in page
    assert page.count('<pre class="sql"') == 2
    assert "no transaction" in page and "one transaction" in page
    from migration_console.core.services.discovery import discover

    for migration in discover(str(target.path)):
        assert migration.checksum in page
    assert 'name="confirm_database"' in page


@pytest.mark.usefixtures("console_env")
def test_it_refuses_a_changed_plan_and_shows_the_new_one(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    old_hash = hash_on_page(admin_client_.get(PLAN_URL))
    target.write("002_second.sql", "CREATE TABLE second_table (id int);\n")

    response = admin_client_.post(RUN_URL, {"plan_hash": old_hash, "confirm_database": "db_main"})

    assert response.status_code == 409
    body = response.content.decode()
    assert "The plan changed" in body
    assert "002_second.sql" in body and "CREATE TABLE second_table" in body
    assert hash_on_page(response) == current_plan_hash() != old_hash
    assert not Run.objects.exists()
    assert not target.table_exists("first_table")
    event = AuditEvent.objects.get()
    assert (event.outcome, event.action, event.actor) == ("refused", "run", "root")


def test_it_refuses_a_plan_changed_by_a_run_from_elsewhere(target, admin_client_, cli_env):
    from tests.conftest import run_manage

    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    old_hash = hash_on_page(admin_client_.get(PLAN_URL))
    assert run_manage(cli_env, "migrate_sql", "run", "--yes").returncode == 0

    response = admin_client_.post(RUN_URL, {"plan_hash": old_hash, "confirm_database": "db_main"})

    assert response.status_code == 409
    assert 'id="plan-empty"' in response.content.decode()
    assert not Run.objects.filter(channel="console").exists()


def test_it_refuses_a_confirmation_that_does_not_name_the_database(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")

    response = admin_client_.post(
        RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_mian"}
    )

    assert response.status_code == 400
    assert "Confirmation did not match" in response.content.decode()
    assert not Run.objects.exists()
    assert AuditEvent.objects.get().outcome == "refused"


def test_it_refuses_a_second_run_at_once_while_the_lock_is_held(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    db_main = target_get("db_main")
    with target_connect(db_main, application_name="other runner") as holder:
        lock_acquire(holder, db_main.schema, wait_seconds=0, database_label="db_main")
        response = admin_client_.post(
            RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"}
        )
        pid = holder.info.backend_pid

    assert response.status_code == 409
    body = response.content.decode()
    assert f"pid {pid}" in body and "other runner" in body
    assert not Run.objects.exists()
    assert AuditEvent.objects.get().outcome == "locked"


@pytest.mark.usefixtures("console_env")
def test_it_runs_in_a_detached_process_and_reports_progress(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    target.write("002_second.sql", "CREATE TABLE second_table (id int);\n")
    plan_hash = hash_on_page(admin_client_.get(PLAN_URL))

    response = admin_client_.post(RUN_URL, {"plan_hash": plan_hash, "confirm_database": "db_main"})

    assert response.status_code == 303
    run_id = run_id_from(response)
    run = wait_for_run(run_id)
    assert run.state == "success", run.message
    assert run.plan_hash == plan_hash and run.pid
    data = admin_client_.get(f"/admin/console/runs/{run_id}/progress.json").json()
    assert data["finished"] is True and data["state"] == "success"
    assert [(r["filename"], r["state"]) for r in data["rows"]] == [
        ("001_first.sql", "completed"),
        ("002_second.sql", "completed"),
    ]
    assert all(r["duration"] for r in data["rows"])
    page = admin_client_.get(f"/admin/console/runs/{run_id}/").content.decode()
    assert "002_second.sql" in page and "applied 2 migration(s)" in page
    assert 'src="/static/console/progress.js"' in page
    assert set(target.tracking()) == {"001", "002"}


@pytest.mark.usefixtures("console_env")
def test_it_shows_the_database_message_of_a_failed_migration(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    target.write("002_broken.sql", "ALTER TABLE no_such_table ADD COLUMN x int;\n")

    response = admin_client_.post(
        RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"}
    )
    run = wait_for_run(run_id_from(response))

    assert run.state == "failed"
    page = admin_client_.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert "relation &quot;no_such_table&quot; does not exist" in page
    status_page = admin_client_.get("/admin/console/targets/db_main/").content.decode()
    assert 'data-status="failed"' in status_page
    assert "relation &quot;no_such_table&quot; does not exist" in status_page


@pytest.mark.usefixtures("console_env")
def test_the_runner_refuses_a_plan_that_changed_after_the_confirmation(target):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    stale = current_plan_hash()
    target.write("002_second.sql", "CREATE TABLE second_table (id int);\n")

    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=stale, planned=["001"])
    run = wait_for_run(run.pk)

    assert run.state == "refused"
    assert "changed since the plan was shown" in run.message
    assert not target.table_exists("first_table")


@pytest.fixture
def short_lock_wait(settings):
    settings.MIGRATION_LOCK_WAIT = 0.5


@pytest.mark.usefixtures("short_lock_wait", "console_env")
def test_a_run_that_cannot_get_the_lock_ends_locked_naming_the_holder(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    db_main = target_get("db_main")
    with target_connect(db_main, application_name="long runner") as holder:
        lock_acquire(holder, db_main.schema, wait_seconds=0, database_label="db_main")
        run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
        run = wait_for_run(run.pk)
        pid = holder.info.backend_pid

    assert run.state == "locked"
    assert str(pid) in run.message and "long runner" in run.message
    page = admin_client_.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert "long runner" in page and 'data-state="locked"' in page
    assert not target.table_exists("first_table")


@pytest.mark.usefixtures("console_env")
def test_a_run_the_worker_cannot_start_is_marked_as_error_naming_why(target):
    run = run_start(target_name="not_configured", caller=CONSOLE_ROOT, plan_hash="x")
    run = wait_for_run(run.pk)

    assert run.state == "error"
    assert "unknown database 'not_configured'" in run.message
    event = AuditEvent.objects.get(run=run)
    assert event.outcome == "error"


@pytest.mark.usefixtures("console_env")
def test_history_shows_applied_migrations_a_duration_chart_and_runs(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    target.write("002_slowish.sql", "SELECT pg_sleep(0.05);\n")
    response = admin_client_.post(
        RUN_URL, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"}
    )
    run = wait_for_run(run_id_from(response))

    page = admin_client_.get("/admin/console/targets/db_main/history/").content.decode()

    assert "<svg" in page and page.count("<rect") == 2
    assert page.index("002_slowish.sql") < page.index("001_first.sql", page.index('id="applied"'))
    assert f'data-run="{run.pk}"' in page
    assert "<script" not in page.split('id="duration-chart"')[1].split("</div>")[0]
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', page)]
    assert widths[1] > widths[0]  # the slow one draws the longer bar


def test_the_overview_shows_counts_last_run_and_lock_holder(target, admin_client_):
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    Run.objects.create(target="db_main", channel="cli", requested_by="ops", state="success")
    db_main = target_get("db_main")
    with target_connect(db_main, application_name="busy runner") as holder:
        lock_acquire(holder, db_main.schema, wait_seconds=0, database_label="db_main")
        page = admin_client_.get("/admin/console/").content.decode()

    assert 'data-target="db_main"' in page
    assert 'data-state="pending"' in page
    assert "ops (cli)" in page
    assert "busy runner" in page


def test_audit_review_filters_and_exports_csv(target, admin_client_):
    audit_record(
        caller=Caller(actor="alice", channel="api", client_ip="10.0.0.9"),
        action="run",
        outcome="denied",
        target="db_main",
        message="=HYPERLINK(evil)",
    )
    audit_record(
        caller=Caller(actor="bob", channel="cli"),
        action="run",
        outcome="success",
        target="db_main",
        migrations=["001", "002"],
    )
    audit_record(
        caller=Caller(actor="alice", channel="console"), action="login", outcome="rate_limited"
    )

    page = admin_client_.get("/admin/console/audit/", {"outcome": "denied"}).content.decode()
    assert page.count('data-outcome="denied"') == 1 and "bob" not in page.split("<tbody>")[1]
    by_user = admin_client_.get("/admin/console/audit/", {"user": "ali"}).content.decode()
    assert by_user.count("<tr data-outcome=") == 2
    by_action = admin_client_.get("/admin/console/audit/", {"action": "login"}).content.decode()
    assert by_action.count("<tr data-outcome=") == 1
    future = admin_client_.get("/admin/console/audit/", {"date_from": "2999-01-01"})
    assert "No audit events match" in future.content.decode()

    response = admin_client_.get("/admin/console/audit/export.csv", {"user": "alice"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["action"] for r in rows} == {"run", "login"}
    denied = next(r for r in rows if r["outcome"] == "denied")
    assert denied["client_ip"] == "10.0.0.9"
    assert denied["message"] == "'=HYPERLINK(evil)"  # never a live formula in a spreadsheet
    everything = admin_client_.get("/admin/console/audit/export.csv")
    all_rows = list(csv.DictReader(io.StringIO(b"".join(everything.streaming_content).decode())))
    assert next(r for r in all_rows if r["actor"] == "bob")["migrations"] == "001 002"
