"""Reading is never refused: a bad set of files still shows every migration it can.

SPEC "Migration files": status, history, check, plan, the console pages, the API
status and /metrics show what they can of a broken set and list its problems
beside them; only actions that change a target (run, rollback, baseline,
repair) refuse, exit 2, naming the file.
"""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services import discovery
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import MigrationSetError
from migration_console.core.services.runs import run_execute
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get
from tests.api_support import API, bearer
from tests.test_api_openapi import assert_documented
from tests.test_console_support import _fresh_rate_limits, make_user  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)

CALLER = Caller(actor="tests", channel="cli")
ORPHAN = "003_c.down.sql"
ORPHAN_REASON = "down file without an up file"


@pytest.fixture
def broken(target):
    """001, 002, 003 applied; then 003_c.sql deleted while its down file stays."""
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    target.write("002_b.sql", "CREATE TABLE b (id int);\n")
    target.write("003_c.sql", "CREATE TABLE c (id int);\n")
    target.write(ORPHAN, "DROP TABLE c;\n")
    assert run_execute(target_name="db_main", caller=CALLER).failure is None
    (target.path / "003_c.sql").unlink()
    return target


def command(*args: str) -> tuple[int, str]:
    """``migrate_sql`` in-process: (exit code, stdout only)."""
    out = io.StringIO()
    try:
        call_command("migrate_sql", *args, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def states(items: list[dict]) -> dict[str, str]:
    return {item["version"]: item["status"] for item in items}


EXPECTED = {"001": "completed", "002": "completed", "003": "missing"}
PROBLEMS = [{"file": ORPHAN, "message": ORPHAN_REASON}]


# --- CLI ---------------------------------------------------------------------------
def test_status_shows_every_row_then_the_problem_and_exits_1(broken):
    code, out = command("status")
    assert code == 1
    lines = out.splitlines()
    assert any("APPLIED" in line and "001_a" in line for line in lines)
    assert any("APPLIED" in line and "002_b" in line for line in lines)
    assert any("MISSING" in line and "003_c" in line for line in lines)
    problems_at = next(i for i, line in enumerate(lines) if "PROBLEMS" in line)
    assert any(f"{ORPHAN}: {ORPHAN_REASON}" in line for line in lines[problems_at:])
    assert problems_at > max(i for i, line in enumerate(lines) if "MISSING" in line)


def test_status_json_carries_the_rows_and_the_problems_and_exits_1(broken):
    code, out = command("status", "--json")
    assert code == 1
    answer = json.loads(out)
    assert states(answer["all_migrations"]) == EXPECTED
    assert answer["problems"] == PROBLEMS


def test_status_of_a_good_set_has_an_empty_problem_list_and_exits_0(target):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    code, out = command("status", "--json")
    assert code == 0
    assert json.loads(out)["problems"] == []


def test_status_in_a_fresh_process_exits_1_not_2(broken, cli_env):
    from tests.conftest import run_manage

    done = run_manage(cli_env, "migrate_sql", "status")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISSING" in done.stdout and ORPHAN in done.stdout


def test_history_lists_what_was_applied_and_the_problem(broken):
    code, out = command("history", "--json")
    assert code == 0
    answer = json.loads(out)
    assert {item["version"] for item in answer["migrations"]} == {"001", "002", "003"}
    assert answer["problems"] == PROBLEMS
    code, text = command("history")
    assert code == 0
    assert "PROBLEMS" in text and ORPHAN in text and "003_c" in text


def test_check_exits_1_and_names_the_problem(broken):
    code, out = command("check", "--json")
    assert code == 1
    answer = json.loads(out)
    assert answer["ok"] is False
    assert answer["problems"] == PROBLEMS
    assert states(answer["needs_attention"]) == {"003": "missing"}
    code, text = command("check")
    assert code == 1 and ORPHAN in text


def test_plan_shows_the_problem_and_says_run_would_refuse(broken):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    code, out = command("plan")
    assert code == 0
    assert "004_d.sql" in out
    assert ORPHAN in out and "run would refuse" in out
    answer = json.loads(command("plan", "--json")[1])
    assert answer["problems"] == PROBLEMS


def test_run_still_refuses_exit_2_naming_the_file_and_changes_nothing(broken):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    out = io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("migrate_sql", "run", "--yes", stdout=out, stderr=io.StringIO())
    assert error.value.returncode == 2
    assert ORPHAN in str(error.value)
    assert not broken.table_exists("d")
    assert "004" not in broken.tracking()


@pytest.mark.parametrize("action", ["rollback", "baseline", "repair"])
def test_maintenance_actions_still_refuse_exit_2(broken, action):
    code, _ = command(action, "002", "--yes")
    assert code == 2


# --- API ---------------------------------------------------------------------------
@pytest.fixture
def api_token(django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    return token_create(user=root, name="tests").raw


def test_api_status_answers_200_with_the_rows_and_the_problems(broken, api_token):
    response = Client().get(API + "status", headers=bearer(api_token))
    assert response.status_code == 200, response.content[:300]
    assert_documented(response, "status", "GET")
    answer = json.loads(response.content)
    assert states(answer["all_migrations"]) == EXPECTED
    assert answer["problems"] == PROBLEMS


def test_api_history_answers_200_with_the_problems(broken, api_token):
    response = Client().get(API + "history", headers=bearer(api_token))
    assert response.status_code == 200, response.content[:300]
    assert_documented(response, "history", "GET")
    answer = json.loads(response.content)
    assert answer["total"] == 3
    assert answer["problems"] == PROBLEMS


def test_api_run_still_refuses_a_bad_set(broken, api_token, worker):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    response = Client().post(
        API + "run",
        data=json.dumps({"confirm": True}),
        content_type="application/json",
        headers=bearer(api_token),
    )
    assert response.status_code == 500
    assert_documented(response, "run", "POST")
    assert response.json()["error"] == "invalid migration files"
    assert ORPHAN in response.json()["message"]
    assert not broken.table_exists("d")


# --- console -----------------------------------------------------------------------
@pytest.fixture
def superuser_client():
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    return client


def problems_box(body: str) -> str:
    assert 'id="set-problems"' in body, body[:2000]
    return body.split('id="set-problems"')[1].split("</div>")[0]


def test_console_status_shows_the_rows_and_the_problem_and_no_run_button(broken, superuser_client):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    response = superuser_client.get("/admin/console/targets/db_main/")
    assert response.status_code == 200
    body = response.content.decode()
    for version, state in {**EXPECTED, "004": "pending"}.items():
        assert f'data-version="{version}" data-status="{state}"' in body
    box = problems_box(body)
    assert ORPHAN in box and ORPHAN_REASON in box
    assert 'id="review-plan"' not in body
    assert 'id="baseline-actions"' not in body and 'id="rollback-actions"' not in body


def test_console_plan_history_and_overview_show_the_problem(broken, superuser_client):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    plan = superuser_client.get("/admin/console/targets/db_main/plan/").content.decode()
    assert ORPHAN in problems_box(plan)
    assert 'name="confirm_database"' not in plan
    assert "004_d.sql" in plan
    history = superuser_client.get("/admin/console/targets/db_main/history/").content.decode()
    assert ORPHAN in problems_box(history)
    assert 'data-version="003"' in history
    overview = superuser_client.get("/admin/console/").content.decode()
    assert ORPHAN in overview
    assert "missing" in overview


def test_console_run_post_is_refused_and_audited(broken, superuser_client):
    broken.write("004_d.sql", "CREATE TABLE d (id int);\n")
    plan_hash = target_status(target_get()).plan_hash
    runs_before = Run.objects.count()
    response = superuser_client.post(
        "/admin/console/targets/db_main/run/",
        {"plan_hash": plan_hash, "confirm_database": "db_main"},
    )
    assert response.status_code == 409
    assert ORPHAN in response.content.decode()
    assert Run.objects.count() == runs_before
    assert not broken.table_exists("d")
    event = AuditEvent.objects.get(action="run", channel="console")
    assert event.outcome == AuditEvent.Outcome.REFUSED and ORPHAN in event.message


# --- metrics -----------------------------------------------------------------------
def test_metrics_still_export_the_series_of_a_broken_target(broken):
    response = Client().get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    durations = {
        (s.labels["version"], s.labels["status"])
        for s in families["migration_console_migration_duration_seconds"].samples
        if s.labels["database"] == "db_main"
    }
    assert durations == {("001", "completed"), ("002", "completed"), ("003", "missing")}
    totals = {
        s.labels["status"]: s.value
        for s in families["migration_console_migrations_total"].samples
        if s.labels["database"] == "db_main"
    }
    assert totals["completed"] == 2 and totals["missing"] == 1


# --- discovery: every reason, lenient and strict -------------------------------------
@pytest.mark.parametrize(
    ("files", "bad", "reason"),
    [
        ({"002_b.sql": "SELECT 2;", "002_c.sql": "SELECT 3;"}, "002_c.sql", "duplicate version"),
        ({"2_b.sql": "SELECT 2;", "002_c.sql": "SELECT 3;"}, "2_b.sql", "duplicate version"),
        ({"002_Bad-Name.sql": "SELECT 2;"}, "002_Bad-Name.sql", "does not match"),
        ({"002_empty.sql": "  \n\n"}, "002_empty.sql", "empty file"),
        ({"002_latin1.sql": b"SELECT '\xe9';"}, "002_latin1.sql", "UTF-8"),
        ({"002_orphan.down.sql": "DROP TABLE x;"}, "002_orphan.down.sql", "without an up file"),
        ({"002_wrapped.sql": "BEGIN;\nSELECT 1;\nCOMMIT;\n"}, "002_wrapped.sql", "BEGIN on line 1"),
    ],
)
def test_each_bad_file_is_a_problem_beside_the_good_files_and_strict_still_raises(
    tmp_path, files, bad, reason
):
    (tmp_path / "001_good.sql").write_text("SELECT 1;\n")
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    found = discovery.discover_set(str(tmp_path))
    assert [f.filename for f in found.files] == ["001_good.sql"]
    assert [(p.file, reason in p.message) for p in found.problems] == [(bad, True)]
    with pytest.raises(MigrationSetError) as error:
        discovery.discover(str(tmp_path))
    assert error.value.filename == bad and reason in error.value.reason


def test_a_dangling_link_is_a_problem_and_its_repair_shows_at_once(tmp_path):
    (tmp_path / "001_good.sql").write_text("SELECT 1;\n")
    (tmp_path / "002_linked.sql").symlink_to(tmp_path / "elsewhere")
    found = discovery.discover_set(str(tmp_path))
    assert [f.version for f in found.files] == ["001"]
    assert [(p.file, p.message) for p in found.problems] == [
        ("002_linked.sql", "not a regular file")
    ]
    (tmp_path / "elsewhere").write_text("SELECT 2;\n")
    assert [f.version for f in discovery.discover_set(str(tmp_path)).files] == ["001", "002"]


def test_an_applied_duplicate_version_shows_neither_file_as_fine(target):
    """A version with two files is not known to be fine: the applied row shows as
    missing and the problem names both files, rather than guessing which file ran."""
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    target.write("002_b.sql", "CREATE TABLE b (id int);\n")
    run_execute(target_name="db_main", caller=CALLER)
    target.write("002_c.sql", "CREATE TABLE c (id int);\n")
    status = target_status(target_get())
    assert {i.version: i.status for i in status.items} == {"001": "completed", "002": "missing"}
    [problem] = status.problems
    assert problem.file == "002_c.sql" and "002_b.sql" in problem.message


def test_a_problem_appearing_or_fixed_shows_at_once_and_changes_the_plan_hash(target):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    target.write("002_b.sql", "CREATE TABLE b (id int);\n")
    good = target_status(target_get())
    assert good.problems == []
    orphan = target.write("009_x.down.sql", "DROP TABLE x;\n")
    bad = target_status(target_get())
    assert [p.file for p in bad.problems] == ["009_x.down.sql"]
    assert [i.version for i in bad.pending] == ["001", "002"]
    assert bad.plan_hash != good.plan_hash
    assert target_status(target_get()).problems == bad.problems  # cached, still there
    orphan.unlink()
    fixed = target_status(target_get())
    assert fixed.problems == [] and fixed.plan_hash == good.plan_hash


def test_a_directory_that_cannot_be_listed_is_a_problem_for_reads_and_a_refusal_for_run(target):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    run_execute(target_name="db_main", caller=CALLER)
    (target.path / "001_a.sql").unlink()
    target.path.rmdir()
    code, out = command("status", "--json")
    assert code == 1
    answer = json.loads(out)
    assert states(answer["all_migrations"]) == {"001": "missing"}
    [problem] = answer["problems"]
    assert problem["file"] == str(target.path) and "cannot list directory" in problem["message"]
    code, _ = command("run", "--yes")
    assert code == 2
