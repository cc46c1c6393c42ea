"""Groups of targets on the console (issue 15): the overview's group rows, the group
page (members with state counts, filter, paging, fast with hundreds of members), one
plan and one typed confirmation for the whole group, and the parent run's page with
each member's state, live. Real PostgreSQL, real workers."""

import re
import time
from dataclasses import replace

import pytest
from django.test import Client
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.discovery import discover_set
from migration_console.target_groups import GroupConfig
from tests.conftest import migrate_sql
from tests.test_browser_console import browser  # noqa: F401 - fixture
from tests.test_console_support import _fresh_rate_limits, make_user  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True)]

CONSOLE = "/admin/console/"
GROUP = CONSOLE + "groups/tenants/"
QUERY = r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%' ORDER BY 1"
ITEMS = "CREATE TABLE items (id int PRIMARY KEY, tenant text DEFAULT current_schema());\n"
MORE = "INSERT INTO items (id) VALUES (1);\n"


def failing_on(schema: str) -> str:
    return (
        f"DO $$ BEGIN IF current_schema() = '{schema}' THEN "
        "RAISE EXCEPTION 'boom in %', current_schema(); END IF; END $$;\n" + ITEMS
    )


def make_group(target, settings, path, count: int, **policy) -> GroupConfig:
    """``count`` tenant schemas in the target's database and a group over them."""
    target.query(
        f"DO $$ BEGIN FOR i IN 1..{int(count)} LOOP "
        "EXECUTE format('CREATE SCHEMA tenant_%s', lpad(i::text, 3, '0')); END LOOP; END $$"
    )
    path.mkdir(exist_ok=True)
    group = GroupConfig(
        name="tenants", dsn=target.dsn, path=str(path), schemas_query=QUERY, targets=(), **policy
    )
    settings.MIGRATION_GROUPS = {"tenants": group}
    return group


@pytest.fixture
def root():
    return make_user("superuser", username="root")


@pytest.fixture
def client(root):
    client = Client()
    client.force_login(root)
    return client


def plan_hash_of(page) -> str:
    match = re.search(r'name="plan_hash" value="([0-9a-f]+)"', page.content.decode())
    assert match, page.content.decode()[-3000:]
    return match.group(1)


def member_names(page) -> list[str]:
    return re.findall(r'<tr data-member="([^"]+)"', page.content.decode())


def test_it_lists_members_with_their_counts_filters_them_by_state_and_pages_them(
    target, settings, tmp_path, client
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 60)
    (path / "001_items.sql").write_text(failing_on("tenant_004"))
    (path / "002_more.sql").write_text(MORE)
    for schema in ("tenant_001", "tenant_002", "tenant_003", "tenant_004"):
        migrate_sql("run", "--database", f"tenants/{schema}", "--yes")

    page = client.get(GROUP)
    assert page.status_code == 200
    names = member_names(page)
    assert names == [f"tenants/tenant_{i:03d}" for i in range(1, 51)]
    body = page.content.decode()
    assert "Page 1 of 2" in body
    first = re.search(r'<tr data-member="tenants/tenant_001".*?</tr>', body, re.S).group(0)
    assert 'class="member-applied">2<' in first and 'class="member-pending">0<' in first
    failed = re.search(r'<tr data-member="tenants/tenant_004".*?</tr>', body, re.S).group(0)
    assert 'data-state="failed"' in failed and 'class="member-failed">1<' in failed
    assert 'class="member-pending">1<' in failed  # 002 still waits behind it
    assert "Needs attention (1)" in body and "Up to date (3)" in body
    assert "Pending (57)" in body and "Failed (1)" in body and "All (60)" in body

    second = client.get(GROUP + "?page=2")
    assert member_names(second) == [f"tenants/tenant_{i:03d}" for i in range(51, 61)]
    assert member_names(client.get(GROUP + "?state=attention")) == ["tenants/tenant_004"]
    assert member_names(client.get(GROUP + "?state=failed")) == ["tenants/tenant_004"]
    assert member_names(client.get(GROUP + "?state=current")) == [
        f"tenants/tenant_00{i}" for i in (1, 2, 3)
    ]
    pending = client.get(GROUP + "?state=pending&page=2")
    assert len(member_names(pending)) == 7 and "Page 2 of 2" in pending.content.decode()
    assert 'href="/admin/console/groups/tenants/?state=pending"' in pending.content.decode()
    assert member_names(client.get(GROUP + "?state=nonsense")) == names  # all, not an error

    # A member's own pages answer under its name, slash and all.
    member = "/admin/console/targets/tenants/tenant_004/"
    assert f'href="{member}"' in body
    for suffix in ("", "plan/", "history/"):
        answer = client.get(member + suffix)
        assert answer.status_code == 200, (suffix, answer.content[:500])
        assert "tenants/tenant_004" in answer.content.decode()
    member_page = client.get(member).content.decode()
    assert "boom in tenant_004" in member_page
    assert '<a href="/admin/console/groups/tenants/" id="crumb-group">' in member_page  # way back
    assert client.get("/admin/console/targets/tenants/tenant_004/nope/").status_code == 404
    assert client.get("/admin/console/groups/nope/").status_code == 404


def seed_applied(target, schemas: list[str], path) -> None:
    """Tracking tables holding every file as applied, written directly (fast)."""
    files = discover_set(str(path)).files
    statements = []
    for schema in schemas:
        statements.append(
            f"CREATE TABLE {schema}.schema_migrations (version text PRIMARY KEY,"
            " name text NOT NULL, checksum text NOT NULL, status text NOT NULL,"
            " applied_at timestamptz NOT NULL,"
            " duration_ns bigint NOT NULL, applied_by text NOT NULL, error text)"
        )
        for migration in files:
            statements.append(
                f"INSERT INTO {schema}.schema_migrations VALUES ('{migration.version}',"
                f" '{migration.name}', '{migration.checksum}', 'completed', now(), 1000,"
                " 'seed', NULL)"
            )
    target.query(";\n".join(statements))


def test_the_group_page_is_fast_with_hundreds_of_members_over_one_connection_per_read(
    target, settings, tmp_path, client, monkeypatch
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 400)
    for index in range(1, 11):
        (path / f"{index:03d}_t{index}.sql").write_text(f"CREATE TABLE t{index} (id int);\n")
    seed_applied(target, [f"tenant_{i:03d}" for i in range(1, 301)], path)

    from migration_console.core.services import groups

    opened = []
    real_connect = groups.target_connect

    def counting_connect(*args, **kwargs):
        opened.append(args[0].name)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(groups, "target_connect", counting_connect)
    client.get(GROUP)  # warm: templates compiled, files read once
    opened.clear()
    timings = []
    for state in ("", "pending", "current"):
        started = time.monotonic()
        page = client.get(GROUP + (f"?state={state}" if state else ""))
        timings.append(time.monotonic() - started)
        assert page.status_code == 200
    assert "All (400)" in page.content.decode() and "Pending (100)" in page.content.decode()
    assert len(opened) <= 3 * 2, opened  # the members' query and their rows: per page view
    assert max(timings) < 2.0, timings

    started = time.monotonic()
    overview = client.get(CONSOLE)
    elapsed = time.monotonic() - started
    assert overview.status_code == 200 and elapsed < 1.5, elapsed
    summary = client.get(GROUP + "summary.json").json()
    assert (summary["members"], summary["attention_members"], summary["pending_members"]) == (
        400,
        0,
        100,
    )
    assert 'data-group="tenants"' in summary["row_html"]


def test_the_overview_lists_groups_with_members_needing_attention(
    target, settings, tmp_path, client
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 3)
    (path / "001_items.sql").write_text(failing_on("tenant_002"))
    migrate_sql("run", "--database", "tenants/tenant_002", "--yes")

    # The overview renders at once; a group not read within its budget loads on its own.
    for _ in range(50):
        body = client.get(CONSOLE).content.decode()
        if 'data-group="tenants" data-known="true"' in body:
            break
        time.sleep(0.1)
    row = re.search(r'<tr data-group="tenants".*?</tr>', body, re.S).group(0)
    assert 'data-known="true"' in row
    assert re.search(r'class="group-members">3<', row)
    assert 'href="/admin/console/groups/tenants/?state=attention">1 needs attention' in row
    assert 'class="group-pending">2<' in row  # the failed one has nothing pending


def test_a_typo_in_the_confirmation_keeps_the_input_and_marks_the_field(
    target, settings, tmp_path, client
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 3)
    (path / "001_items.sql").write_text(ITEMS)
    shown = plan_hash_of(client.get(GROUP))

    answer = client.post(GROUP + "run/", {"plan_hash": shown, "confirm_group": "tenant"})

    assert answer.status_code == 400
    body = answer.content.decode()
    field = re.search(r'<input type="text" id="id_confirm_group"[^>]*>', body).group(0)
    assert 'value="tenant"' in field and 'aria-invalid="true"' in field and "autofocus" in field
    assert 'id="id_confirm_group_error"' in body
    assert "type the group name &#x27;tenants&#x27;" in body
    assert not Run.objects.exists()
    row = AuditEvent.objects.get(action="run", target="tenants")
    assert row.outcome == "refused" and "did not match" in row.message
    assert client.get(GROUP + "run/").status_code == 302  # a reload goes back to the page


def test_a_member_added_between_plan_and_confirm_refuses_with_the_message(
    target, settings, tmp_path, client
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 3)
    (path / "001_items.sql").write_text(ITEMS)
    shown = plan_hash_of(client.get(GROUP))
    target.query("CREATE SCHEMA tenant_004")  # a tenant signed up meanwhile

    answer = client.post(GROUP + "run/", {"plan_hash": shown, "confirm_group": "tenants"})

    assert answer.status_code == 409
    body = answer.content.decode()
    error = re.search(r'<p class="errornote" id="plan-error"[^>]*>(.*?)</p>', body, re.S)
    assert error and "changed since the plan was shown" in error.group(1)
    assert (
        'value="tenants"' in re.search(r'<input type="text" id="id_confirm_group"[^>]*>', body)[0]
    )
    assert "tenants/tenant_004" in member_names(answer)
    assert plan_hash_of(answer) != shown
    assert not Run.objects.exists()
    row = AuditEvent.objects.get(action="run", target="tenants")
    assert row.outcome == "refused" and "changed since the plan was shown" in row.message


def test_a_post_without_its_csrf_token_is_refused_and_audited_as_a_run_of_the_group(
    target, settings, tmp_path, root
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 2)
    (path / "001_items.sql").write_text(ITEMS)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)

    answer = strict.post(GROUP + "run/", {"plan_hash": "x", "confirm_group": "tenants"})

    assert answer.status_code == 403 and not Run.objects.exists()
    row = AuditEvent.objects.get(target="tenants")
    assert (row.action, row.outcome) == ("run", "denied") and "CSRF" in row.message


def test_a_group_with_approvals_becomes_a_request(target, settings, tmp_path, client):
    path = tmp_path / "tenant_sql"
    group = make_group(target, settings, path, 2)
    settings.MIGRATION_GROUPS = {"tenants": replace(group, approvals=1)}
    (path / "001_items.sql").write_text(ITEMS)
    page = client.get(GROUP)
    assert 'id="needs-approval"' in page.content.decode()

    answer = client.post(
        GROUP + "run/", {"plan_hash": plan_hash_of(page), "confirm_group": "tenants"}
    )

    parent = Run.objects.get(target="tenants")
    assert answer.status_code == 303 and answer["Location"] == f"{CONSOLE}requests/{parent.pk}/"
    assert parent.state == "awaiting_approval"
    again = client.get(GROUP).content.decode()
    assert 'id="group-open-run"' in again and 'id="confirm-form"' not in again


def test_a_view_only_user_reads_the_group_and_cannot_run_it(target, settings, tmp_path):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 2)
    (path / "001_items.sql").write_text(ITEMS)
    viewer = Client()
    viewer.force_login(make_user("staff_view", username="viewer"))
    page = viewer.get(GROUP)
    assert page.status_code == 200 and 'id="confirm-form"' not in page.content.decode()
    assert "running it needs" in page.content.decode()
    refused = viewer.post(GROUP + "run/", {"plan_hash": "x", "confirm_group": "tenants"})
    assert refused.status_code == 403 and not Run.objects.exists()
    assert AuditEvent.objects.get(action="run", target="tenants").outcome == "denied"


def wait_for_parent(client, run_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    data = {}
    while time.monotonic() < deadline:
        data = client.get(f"{CONSOLE}runs/{run_id}/progress.json").json()
        if data["finished"]:
            return data
        time.sleep(0.3)
    raise AssertionError(f"group run #{run_id} still {data.get('state')}: {data}")


@pytest.mark.slow
def test_a_console_group_run_through_a_worker_ends_success_with_every_member_shown(
    target, settings, tmp_path, client, start_worker
):
    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 4, parallel=2)
    (path / "001_items.sql").write_text(ITEMS)
    (path / "002_more.sql").write_text(MORE)
    start_worker()
    shown = plan_hash_of(client.get(GROUP))

    answer = client.post(GROUP + "run/", {"plan_hash": shown, "confirm_group": "tenants"})

    assert answer.status_code == 303, answer.content.decode()[-2000:]
    run_id = int(re.search(r"/runs/(\d+)/$", answer["Location"]).group(1))
    first = client.get(answer["Location"])
    assert first.status_code == 200 and 'id="run-members"' in first.content.decode()
    data = wait_for_parent(client, run_id)
    assert data["state"] == "success", data
    names = [f"tenants/tenant_{i:03d}" for i in range(1, 5)]
    assert [m["database"] for m in data["members"]] == names
    assert [m["state"] for m in data["members"]] == ["success"] * 4
    assert data["member_counts"] == [{"state": "success", "label": "SUCCESS", "count": 4}]
    assert data["members_done"] == 4 and data["rows"] == []
    page = client.get(f"{CONSOLE}runs/{run_id}/").content.decode()
    assert page.count('data-state="success"') >= 5  # the run, then each member
    for member in data["members"]:
        assert f'href="{member["url"]}"' in page
    child = client.get(data["members"][0]["url"]).content.decode()
    assert f'href="{CONSOLE}runs/{run_id}/"' in child and 'id="run-parent-link"' in child
    member_data = client.get(data["members"][0]["url"] + "progress.json").json()
    assert member_data["parent"]["id"] == run_id
    assert [row["state"] for row in member_data["rows"]] == ["completed", "completed"]
    assert target.query("SELECT tenant FROM tenant_003.items") == [("tenant_003",)]
    group_page = client.get(GROUP + "?state=current").content.decode()
    assert "Up to date (4)" in group_page


def group_pages_data(target, settings, tmp_path) -> dict:
    """A group with members in several states and a finished parent run with its
    members (no worker needed to draw the pages), for the axe pages."""
    path = tmp_path / "axe_tenant_sql"
    make_group(target, settings, path, 6)
    (path / "001_items.sql").write_text(failing_on("tenant_002"))
    for schema in ("tenant_001", "tenant_002"):
        migrate_sql("run", "--database", f"tenants/{schema}", "--yes")
    members = [f"tenants/tenant_{i:03d}" for i in range(1, 7)]
    now = timezone.now()
    parent = Run.objects.create(
        target="tenants",
        action="run",
        channel="console",
        requested_by="root",
        planned=members,
        arguments={"group": "tenants", "members": members, "parallel": 2, "canary": 0},
        state="failed",
        message="6 member(s): 1 applied, 0 up to date, 1 failed, 4 skipped",
        started_at=now,
        finished_at=now,
    )
    for name, state in ((members[0], "success"), (members[1], "failed")):
        Run.objects.create(
            target=name,
            action="run",
            channel="console",
            requested_by="root",
            planned=["001"],
            state=state,
            parent=parent,
            started_at=now,
            finished_at=now,
        )
    return {"group_run": parent}


@pytest.mark.browser
@pytest.mark.slow
def test_in_a_browser_the_confirmed_group_run_shows_every_member_succeed_live(
    browser,  # noqa: F811 - fixture
    live_server,
    target,
    settings,
    tmp_path,
    root,
    start_worker,
):
    from playwright.sync_api import expect

    from tests.test_usability_support import signed_in_page

    path = tmp_path / "tenant_sql"
    make_group(target, settings, path, 3, parallel=2)
    (path / "001_items.sql").write_text("SELECT pg_sleep(1);\n" + ITEMS)
    start_worker()
    page = signed_in_page(browser, live_server, root)
    try:
        page.goto(GROUP)
        page.fill("#id_confirm_group", "tenants")
        page.click("#confirm-submit")
        page.wait_for_url(re.compile(r".*/admin/console/runs/\d+/$"))
        assert page.locator("#run").get_attribute("data-finished") == "false"

        page.wait_for_selector("#run-state[data-state='success']", timeout=120_000)
        members = page.locator("#run-members-body tr")
        expect(members).to_have_count(3)
        expect(page.locator("#run-members-body tr[data-state='success']")).to_have_count(3)
        expect(page.locator("#run-member-counts [data-state='success'] .count")).to_have_text("3")
        expect(page.locator("#run-live")).to_contain_text("Finished: SUCCESS, 3 of 3 members done.")
        parent_url = page.url
        members.first.get_by_role("link").click()
        expect(page.locator("#run-parent-link")).to_have_attribute(
            "href", parent_url.removeprefix(live_server.url)
        )
    finally:
        page.context.close()
