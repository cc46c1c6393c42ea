"""Groups of targets (fleets): tenant schemas found by a query, each with its own
tracking table and lock; canaries, parallelism and the failure policy, from the CLI
(in-process) and the API (worker jobs). Real PostgreSQL, real workers."""

import json
import time
from dataclasses import replace

import psycopg
import pytest
from django.core.cache import cache
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.locking import lock_key
from migration_console.target_groups import GroupConfig
from tests.api_support import API, bearer
from tests.conftest import migrate_sql
from tests.test_console_support import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

QUERY = r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%' ORDER BY 1"
ITEMS = "CREATE TABLE items (id int PRIMARY KEY, tenant text DEFAULT current_schema());\n"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fleet(target, settings, tmp_path):
    """``fleet(n, **policy)``: n tenant schemas in the target's database, a group
    ``tenants`` over them with its own migrations directory; returns (group, path)."""

    def make(count: int, **policy):
        for i in range(1, count + 1):
            target.query(f"CREATE SCHEMA tenant_{i:02d}")
        path = tmp_path / "tenant_migrations"
        path.mkdir(exist_ok=True)
        group = GroupConfig(
            name="tenants",
            dsn=target.dsn,
            path=str(path),
            schemas_query=QUERY,
            targets=(),
            **policy,
        )
        settings.MIGRATION_GROUPS = {"tenants": group}
        return group, path

    return make


def tables_in(target, table: str) -> list[str]:
    return [
        row[0]
        for row in target.query(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = %s ORDER BY 1",
            [table],
        )
    ]


def test_status_of_a_group_lists_every_member_then_runs_them_all_in_their_own_schema(target, fleet):
    _, path = fleet(6)
    (path / "001_items.sql").write_text(ITEMS)
    (path / "002_more.sql").write_text("INSERT INTO items (id) VALUES (1);\n")
    code, output = migrate_sql("status", "--group", "tenants", "--json")
    assert code == 1  # pending everywhere
    answer = json.loads(output[: output.rindex("}") + 1])
    assert answer["total_members"] == 6
    assert answer["members"][0] == {
        "database": "tenants/tenant_01",
        "pending_count": 2,
        "applied_count": 0,
        "failed_count": 0,
        "drifted_count": 0,
        "problems": [],
    }

    code, output = migrate_sql("run", "--group", "tenants", "--yes", "--parallel", "3")
    assert code == 0, output
    assert "6 member(s): 6 applied" in output
    assert tables_in(target, "items") == [f"tenant_{i:02d}" for i in range(1, 7)]
    assert target.query("SELECT tenant FROM tenant_04.items") == [("tenant_04",)]
    assert not target.table_exists("public.schema_migrations")  # each tenant has its own
    parent = Run.objects.get(parent__isnull=True, target="tenants")
    assert parent.state == "success" and parent.members.count() == 6
    assert AuditEvent.objects.filter(action="run", target__startswith="tenants/").count() == 6
    code, output = migrate_sql("status", "--group", "tenants")
    assert code == 0 and "0 member(s) need attention" in output, output


def failing_on(schema: str) -> str:
    return (
        "DO $$ BEGIN IF current_schema() = '"
        + schema
        + "' THEN RAISE EXCEPTION 'boom in %', current_schema(); END IF; END $$;\n"
        + ITEMS
    )


def test_a_failing_canary_stops_the_group_before_any_other_member(target, fleet):
    _, path = fleet(5, canary=1)
    (path / "001_items.sql").write_text(failing_on("tenant_01"))
    code, output = migrate_sql("run", "--group", "tenants", "--yes")
    assert code == 1, output
    assert "0 applied" in output and "1 failed" in output and "4 skipped" in output, output
    assert tables_in(target, "items") == []


def test_on_error_stop_starts_no_new_member_and_continue_runs_the_rest(target, fleet):
    _, path = fleet(5)
    (path / "001_items.sql").write_text(failing_on("tenant_02"))
    code, output = migrate_sql("run", "--group", "tenants", "--yes", "--parallel", "1")
    assert code == 1, output
    assert tables_in(target, "items") == ["tenant_01"]
    assert "3 skipped" in output, output

    code, output = migrate_sql(
        "run", "--group", "tenants", "--yes", "--parallel", "1", "--on-error", "continue"
    )
    assert code == 1, output
    assert tables_in(target, "items") == ["tenant_01", "tenant_03", "tenant_04", "tenant_05"]


def test_a_member_locked_by_someone_else_makes_the_group_exit_3(target, fleet, settings):
    _, path = fleet(3)
    (path / "001_items.sql").write_text(ITEMS)
    settings.MIGRATION_LOCK_WAIT = 0.5
    with psycopg.connect(target.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock_key(target.dbname, "tenant_02")])
        code, output = migrate_sql("run", "--group", "tenants", "--yes", "--on-error", "continue")
    assert code == 3, output
    assert tables_in(target, "items") == ["tenant_01", "tenant_03"]


def test_the_api_runs_a_group_on_workers_and_reports_each_member(target, fleet, start_worker):
    _, path = fleet(4, parallel=2)
    (path / "001_items.sql").write_text(ITEMS)
    start_worker()
    token = token_create(user=make_user("superuser", "root")).raw
    client = Client()
    status = client.get(f"{API}status?group=tenants", headers=bearer(token))
    assert status.status_code == 200, status.content
    assert status.json()["total_members"] == 4
    answer = client.post(
        f"{API}run",
        json.dumps({"confirm": True, "group": "tenants"}),
        content_type="application/json",
        headers=bearer(token),
    )
    assert answer.status_code == 202, answer.content
    parent_id = answer.json()["run"]
    deadline = time.monotonic() + 90
    detail = {}
    while time.monotonic() < deadline:
        detail = client.get(f"{API}runs/{parent_id}", headers=bearer(token)).json()
        if detail["state"] not in ("queued", "running"):
            break
        time.sleep(0.3)
    assert detail["state"] == "success", detail
    assert [m["state"] for m in detail["members"]] == ["success"] * 4
    assert tables_in(target, "items") == [f"tenant_{i:02d}" for i in range(1, 5)]
    unknown = client.get(f"{API}status?group=nope", headers=bearer(token))
    assert unknown.status_code == 404


def test_the_targets_file_reads_groups_and_refuses_bad_ones_naming_the_key(tmp_path, monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from migration_console.target_groups import load_groups
    from migration_console.targets import load_targets_file

    path = tmp_path / "targets.yaml"
    monkeypatch.setenv("MIGRATION_TARGETS_FILE", str(path))
    head = f"db_eu:\n  dsn: host=/tmp dbname=eu\n  path: {tmp_path}\ngroups:\n"
    path.write_text(
        head + f"  tenants:\n    dsn: host=/tmp dbname=t\n    path: {tmp_path}\n"
        "    schemas: SELECT 'tenant_1'\n    parallel: 8\n    canary: 1\n"
        "  regions:\n    targets: [db_eu]\n    on_error: continue\n    approvals: 1\n"
    )
    targets = load_targets_file(str(path))
    assert set(targets) == {"db_eu"}
    groups = load_groups(targets)
    assert (groups["tenants"].parallel, groups["tenants"].canary) == (8, 1)
    assert groups["regions"].targets == ("db_eu",) and groups["regions"].approvals == 1
    for body, message in (
        ("  g:\n    targets: [db_us]\n", "groups.g.targets: 'db_us' is not a target"),
        ("  g:\n    targets: [db_eu]\n    parallel: 0\n", "groups.g.parallel"),
        ("  g:\n    targets: [db_eu]\n    on_error: ignore\n", "groups.g.on_error"),
        ("  g:\n    schemas: SELECT 1\n", "groups.g.dsn: missing"),
        ("  g:\n    targets: [db_eu]\n    schemas: SELECT 1\n", "exactly one of"),
        ("  db_eu:\n    targets: [db_eu]\n", "already a target's name"),
        ("  g:\n    targets: [db_eu]\n    colour: red\n", "groups.g.colour: unknown key"),
    ):
        path.write_text(head + body)
        with pytest.raises(ImproperlyConfigured, match=message):
            load_groups(load_targets_file(str(path)))


def test_a_member_added_between_plan_and_confirm_makes_the_plan_stale(target, fleet, settings):
    from migration_console.core.services.caller import Caller
    from migration_console.core.services.errors import RunRefused
    from migration_console.core.services.fleet import group_plan_hash, group_run_start
    from migration_console.core.services.groups import group_members

    group, path = fleet(3)
    (path / "001_items.sql").write_text(ITEMS)
    shown = group_plan_hash(group, group_members(group))
    target.query("CREATE SCHEMA tenant_04")  # a tenant signed up meanwhile
    caller = Caller(actor="root", channel="api")
    with pytest.raises(RunRefused, match="changed since the plan was shown"):
        group_run_start(group=group, caller=caller, expected_plan_hash=shown)
    assert not Run.objects.exists()
    # Approved requests are checked again when their job comes up.
    settings.MIGRATION_GROUPS = {"tenants": replace(group, approvals=1)}
    request = group_run_start(group=settings.MIGRATION_GROUPS["tenants"], caller=caller)
    assert request.state == "awaiting_approval"
    target.query("CREATE SCHEMA tenant_05")
    from migration_console.core.services.job_execute import run_job_execute
    from migration_console.core.services.jobs import job_defer

    job_defer(request, None)  # as the last approval does
    request.save()
    assert "stale" in run_job_execute(run_id=request.pk, stop_reason=lambda: None)
    request.refresh_from_db()
    assert request.state == "stale" and not tables_in(target, "items")


def test_cancelling_a_group_run_stops_its_running_member_and_starts_no_other(
    target, fleet, start_worker
):
    from migration_console.core.services.caller import Caller
    from migration_console.core.services.control import run_cancel
    from migration_console.core.services.fleet import group_run_start
    from tests.faults import wait_for_query

    group, path = fleet(3, parallel=1)
    (path / "001_items.sql").write_text(ITEMS + "SELECT pg_sleep(60);\n")
    start_worker()
    caller = Caller(actor="root", channel="api")
    parent = group_run_start(group=group, caller=caller)
    wait_for_query(target.dsn, "pg_sleep(60)")
    started = time.monotonic()
    cancelled = run_cancel(run_id=parent.pk, caller=caller)
    assert time.monotonic() - started < 10
    assert cancelled.state == "cancelled", cancelled.message
    assert cancelled.message.startswith("cancelled by root")
    states = sorted(cancelled.members.values_list("state", flat=True))
    assert states == ["cancelled"]  # the running one; the others never started
    assert tables_in(target, "items") == []  # its transactional file rolled back
    row = AuditEvent.objects.get(action="cancel", run=parent)
    assert row.outcome == "success" and "1 running member(s) stopped" in row.message
