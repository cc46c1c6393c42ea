"""Baseline and repair through the JSON API and the web console (the CLI has its own
tests in test_baseline.py and test_repair.py): each goes through maintenance_execute,
leaves a Run and an audit row, and is refused, audited, without a confirmation."""

import hashlib
import json

import pytest
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.maintenance import maintenance_plan
from migration_console.core.services.targets import target_get
from tests.conftest import migrate_sql
from tests.test_api_openapi import assert_documented
from tests.test_baseline import by_hand  # noqa: F401 - fixture: 001-004, schema of 1-3 by hand
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    make_user,
    run_id_from,
    wait_for_run,
)

pytestmark = pytest.mark.django_db

BAD = "SELECT * FROM no_such_table;\n"


@pytest.fixture
def failed(target):
    """001 applied, 002 failed (its row says so), 003 waits behind it."""
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    target.write("002_bad.sql", BAD)
    target.write("003_t3.sql", "CREATE TABLE t3 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 1
    assert target.tracking()["002"][0] == "failed"
    return target


def states(target) -> dict[str, str]:
    return {version: row[0] for version, row in target.tracking().items()}


def applied_by(target, version: str) -> str:
    return target.scalar("SELECT applied_by FROM schema_migrations WHERE version = %s", [version])


def assert_recorded(action: str, channel: str, migrations: list[str]) -> Run:
    run = Run.objects.get(action=action)
    assert (run.state, run.channel, run.requested_by) == ("success", channel, "root"), run.message
    event = AuditEvent.objects.get(action=action, run=run)
    assert (event.outcome, event.channel, event.actor) == ("success", channel, "root")
    assert event.migrations == migrations
    return run


def assert_refused_unchanged(target, before: dict, action: str, outcome: str) -> None:
    assert target.tracking() == before
    assert not Run.objects.filter(action=action, state="success").exists()
    event = AuditEvent.objects.get(action=action)
    assert event.outcome == outcome, event.message


# --- JSON API ----------------------------------------------------------------------------


@pytest.fixture
def api_post(client, django_user_model, lazy_worker):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    raw = token_create(user=root, name="tests").raw

    def post(action, body, token=raw):
        lazy_worker()  # the API queues the action for a worker
        response = client.post(
            f"/admin/migrations/{action}",
            data=json.dumps(body),
            content_type="application/json",
            headers={"authorization": f"Bearer {token}"},
        )
        assert_documented(response, action, "POST")  # every answer matches the OpenAPI document
        return response

    return post


@pytest.mark.usefixtures("by_hand")
def test_the_api_baselines_every_file_up_to_the_version_without_running_them(target, api_post):
    response = api_post("baseline", {"confirm": True, "to": "003"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["status"], data["action"], data["count"]) == ("success", "baseline", 3)
    assert states(target) == {"001": "completed", "002": "completed", "003": "completed"}
    assert applied_by(target, "003") == "baseline:root"
    assert not target.table_exists("t4")
    assert_recorded("baseline", "api", ["001", "002", "003"])


def test_the_api_repair_clears_a_failure_so_that_run_applies_the_file_again(failed, api_post):
    failed.write("002_bad.sql", "CREATE TABLE t2 (id int);\n")  # the fix
    response = api_post("repair", {"confirm": True, "version": "002"})
    assert response.status_code == 200, response.content
    assert response.json()["action"] == "repair"
    assert states(failed) == {"001": "completed"}
    assert_recorded("repair", "api", ["002"])
    assert migrate_sql("run", "--yes")[0] == 0
    assert failed.table_exists("t2") and failed.table_exists("t3")


def test_the_api_repair_with_mark_applied_records_the_failed_file_completed(failed, api_post):
    response = api_post("repair", {"confirm": True, "version": "002", "mark_applied": True})
    assert response.status_code == 200, response.content
    status, checksum, error = failed.tracking()["002"]
    assert (status, error) == ("completed", None)
    assert checksum == hashlib.sha256(BAD.encode()).hexdigest()
    assert applied_by(failed, "002") == "repair:root"
    assert_recorded("repair", "api", ["002"])


def test_the_api_repair_re_records_the_checksum_of_a_drifted_file(target, api_post):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    edited = "CREATE TABLE t1 (id bigint);\n"
    target.write("001_t1.sql", edited)
    response = api_post("repair", {"confirm": True, "version": 1})  # a number is a version
    assert response.status_code == 200, response.content
    assert target.tracking()["001"][1] == hashlib.sha256(edited.encode()).hexdigest()
    assert_recorded("repair", "api", ["001"])


@pytest.mark.parametrize(
    ("action", "body", "named"),
    [
        ("baseline", {"to": "002"}, "confirm"),
        ("baseline", {"confirm": False, "to": "002"}, "confirm"),
        ("baseline", {"confirm": True}, '"to"'),
        ("baseline", {"confirm": True, "to": "two"}, "two"),
        ("baseline", {"confirm": True, "to": "042"}, "042"),
        ("baseline", {"confirm": True, "to": "002", "mark_applied": True}, "mark_applied"),
        ("repair", {"version": "002"}, "confirm"),
        ("repair", {"confirm": True, "to": "002"}, "'to'"),
        ("repair", {"confirm": True, "version": ["002"]}, '"version"'),
        ("repair", {"confirm": True, "version": "002", "mark_applied": "yes"}, "mark_applied"),
        ("repair", {"confirm": True, "version": "002", "mark_applied": None}, "mark_applied"),
        ("repair", {"confirm": True, "version": "001"}, "nothing to repair"),
        ("repair", {"confirm": True, "version": "003", "mark_applied": True}, "pending"),
    ],
)
def test_the_api_answers_400_naming_the_problem_and_changes_nothing(
    failed, api_post, action, body, named
):
    before = failed.tracking()
    response = api_post(action, body)
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["error"] == "bad request", data
    assert named in data["message"], data
    assert failed.tracking() == before
    event = AuditEvent.objects.get(action=action)
    assert event.outcome != "success" and event.channel == "api"


def test_the_api_answers_409_when_baseline_meets_recorded_rows(failed, api_post):
    before = failed.tracking()
    response = api_post("baseline", {"confirm": True, "to": "001"})
    assert response.status_code == 409, response.content
    data = response.json()
    assert (data["error"], data["reason"]) == ("refused", "baseline_conflict")
    assert data["versions"] == ["001", "002"]
    assert_refused_unchanged(failed, before, "baseline", "refused")


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("baseline", {"confirm": True, "to": "002"}),
        ("repair", {"confirm": True, "version": "002", "mark_applied": True}),
    ],
)
def test_a_staff_token_is_denied_403_and_audited(failed, api_post, django_user_model, action, body):
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    before = failed.tracking()
    response = api_post(action, body, token=token_create(user=staff).raw)
    assert response.status_code == 403
    assert_refused_unchanged(failed, before, action, "denied")
    assert AuditEvent.objects.get(action=action).actor == "staff"


# --- console -------------------------------------------------------------------------------

CONSOLE = "/admin/console/targets/db_main/"


def logged_in(kind: str, username: str) -> Client:
    client = Client()
    client.force_login(make_user(kind, username=username))
    return client


def confirm(client, action, version, *, plan_hash, database="db_main", typed=None, **extra):
    return client.post(
        f"{CONSOLE}{action}/confirm/",
        {
            "version": version,
            "plan_hash": plan_hash,
            "confirm_database": database,
            "confirm_version": version if typed is None else typed,
            **extra,
        },
    )


def plan_hash(action: str, version: str, mark_applied: bool = False) -> str:
    plan = maintenance_plan(
        action=action, target=target_get("db_main"), version=version, mark_applied=mark_applied
    )
    return plan.plan_hash


def test_the_status_page_offers_baseline_and_repair_only_to_a_superuser(failed):
    failed.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")
    root = logged_in("superuser", "root").get(CONSOLE).content.decode()
    assert 'id="baseline-actions"' in root and 'value="004"' in root
    assert 'id="repair-002"' in root and 'name="mark_applied"' in root
    assert 'id="repair-001"' not in root  # completed: nothing to repair

    staff = logged_in("staff_view", "viewer").get(CONSOLE).content.decode()
    elsewhere = logged_in("superuser", "root2").get(CONSOLE, REMOTE_ADDR="198.51.100.7")
    for page in (staff, elsewhere.content.decode()):
        assert "002_bad.sql" in page
        for needle in ("baseline-actions", "repair-002", "rollback-actions", "Repair…"):
            assert needle not in page
    review = logged_in("staff_view", "viewer2").get(f"{CONSOLE}repair/", {"version": "002"})
    assert 'id="repair-unavailable"' in review.content.decode()
    assert 'id="repair-form"' not in review.content.decode()


def test_the_review_pages_show_exactly_what_will_change(failed):
    client = logged_in("superuser", "root")
    repair = client.get(f"{CONSOLE}repair/", {"version": "002", "mark_applied": "1"})
    page = repair.content.decode()
    assert "record 002_bad.sql as completed" in page and "the failure is cleared" in page
    assert 'name="mark_applied" value="1"' in page
    assert plan_hash("repair", "002", mark_applied=True) in page
    assert 'name="confirm_database"' in page and 'name="confirm_version"' in page
    assert BAD.strip() not in page  # no file runs: its SQL is not offered as the change

    clear = client.get(f"{CONSOLE}repair/", {"version": "002"}).content.decode()
    assert "delete the failed tracking row of 002_bad" in clear

    baseline = client.get(f"{CONSOLE}baseline/", {"to": "002"}).content.decode()
    assert "already has rows at or above it" in baseline and 'id="baseline-form"' not in baseline
    assert states(failed) == {"001": "completed", "002": "failed"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("console_env", "by_hand")
def test_a_confirmed_console_baseline_runs_detached_and_is_recorded(target):
    client = logged_in("superuser", "root")
    response = confirm(client, "baseline", "003", plan_hash=plan_hash("baseline", "003"))
    assert response.status_code == 303, response.content.decode()[:500]
    run = wait_for_run(run_id_from(response))
    assert run.action == "baseline" and run.state == "success", run.message
    assert states(target) == {"001": "completed", "002": "completed", "003": "completed"}
    assert applied_by(target, "001") == "baseline:root"
    assert_recorded("baseline", "console", ["001", "002", "003"])
    page = client.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert "baselined 3 migration(s)" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("console_env")
def test_a_confirmed_console_repair_marks_a_failed_file_applied_detached(failed):
    client = logged_in("superuser", "root")
    response = confirm(
        client,
        "repair",
        "002",
        plan_hash=plan_hash("repair", "002", mark_applied=True),
        mark_applied="1",
    )
    assert response.status_code == 303, response.content.decode()[:500]
    run = wait_for_run(run_id_from(response))
    assert run.action == "repair" and run.state == "success", run.message
    assert states(failed) == {"001": "completed", "002": "completed"}
    assert applied_by(failed, "002") == "repair:root"
    assert_recorded("repair", "console", ["002"])


@pytest.mark.parametrize(
    ("action", "version", "database", "typed"),
    [
        ("baseline", "002", "db_main", "001"),
        ("baseline", "002", "db_other", "002"),
        ("baseline", "002", "", ""),
        ("repair", "002", "db_main", "2"),
        ("repair", "002", "DB_MAIN", "002"),
    ],
)
def test_a_console_action_needs_the_database_name_and_the_version_typed(
    request, action, version, database, typed
):
    target = request.getfixturevalue("by_hand" if action == "baseline" else "failed")
    before = target.tracking()
    client = logged_in("superuser", "root")
    response = confirm(
        client,
        action,
        version,
        plan_hash=plan_hash(action, version),
        database=database,
        typed=typed,
    )
    assert response.status_code == 400
    assert "Confirmation did not match" in response.content.decode()
    assert_refused_unchanged(target, before, action, "refused")
    assert not Run.objects.filter(action=action).exists()


def test_a_console_repair_refuses_a_plan_that_is_not_the_one_reviewed(failed):
    before = failed.tracking()
    client = logged_in("superuser", "root")
    # reviewed "clear the failure", then posted mark_applied: another plan
    response = confirm(
        client, "repair", "002", plan_hash=plan_hash("repair", "002"), mark_applied="1"
    )
    assert response.status_code == 409
    assert "plan changed" in response.content.decode()
    assert_refused_unchanged(failed, before, "repair", "refused")


@pytest.mark.parametrize("action", ["baseline", "repair"])
def test_a_staff_user_posting_is_denied_audited_and_nothing_runs(failed, action):
    failed.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")
    version = "004" if action == "baseline" else "002"
    before = failed.tracking()
    client = logged_in("staff_view", "viewer")
    response = confirm(client, action, version, plan_hash="x")
    assert response.status_code == 403
    assert_refused_unchanged(failed, before, action, "denied")
    assert AuditEvent.objects.get(action=action).actor == "viewer"
    assert not Run.objects.filter(action=action).exists()
