"""Change management in the console: a run on a target with approvals becomes a
request, reviewed and approved (or rejected) by another superuser on the requests
pages, with typed confirmation; the plan page's "not before" field schedules a run."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from playwright.sync_api import expect

from migration_console.core.models import AuditEvent, Run
from tests.test_browser_console import browser, screenshot  # noqa: F401 - fixture
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    current_plan_hash,
    make_user,
)
from tests.test_usability_support import signed_in_page

pytestmark = [pytest.mark.django_db(transaction=True)]

CONSOLE = "/admin/console/"
PLAN = CONSOLE + "targets/db_main/plan/"
RUN = CONSOLE + "targets/db_main/run/"


def with_approvals(settings, target, count=1) -> None:
    settings.MIGRATION_TARGETS = {target.name: replace(target.config(), approvals=count)}


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def confirm(client, **extra):
    return client.post(
        RUN, {"plan_hash": current_plan_hash(), "confirm_database": "db_main", **extra}
    )


def test_a_console_run_becomes_a_request_that_another_superuser_approves(target, settings):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_approvals(settings, target)
    alice, bob = make_user("superuser", "alice"), make_user("superuser", "bob")
    alice_client, bob_client = signed_in(alice), signed_in(bob)
    plan = alice_client.get(PLAN).content.decode()
    assert 'id="needs-approval"' in plan
    status = alice_client.get(CONSOLE + "targets/db_main/").content.decode()
    assert 'id="target-policy"' in status and "need 1 approval" in status
    answer = confirm(alice_client)
    run = Run.objects.get()
    assert run.state == "awaiting_approval"
    assert answer.status_code == 303 and answer["Location"] == f"{CONSOLE}requests/{run.pk}/"

    overview = bob_client.get(CONSOLE).content.decode()
    assert "1 run request awaiting approval" in overview
    listing = bob_client.get(f"{CONSOLE}requests/").content.decode()
    assert f'data-run="{run.pk}"' in listing
    own = alice_client.get(f"{CONSOLE}requests/{run.pk}/").content.decode()
    assert 'id="decision-unavailable"' in own and "your own request" in own
    assert 'id="decision-form"' not in own
    page = bob_client.get(f"{CONSOLE}requests/{run.pk}/").content.decode()
    assert 'id="decision-form"' in page and "001_a.sql" in page and "CREATE TABLE a" in page

    approve = f"{CONSOLE}requests/{run.pk}/approve/"
    typo = bob_client.post(approve, {"confirm_database": "db_mian", "comment": "ok"})
    assert typo.status_code == 400
    body = typo.content.decode()
    assert 'aria-invalid="true"' in body and 'value="db_mian"' in body and ">ok</textarea>" in body
    assert Run.objects.get().state == "awaiting_approval"
    # The requester cannot approve by posting either.
    own_post = alice_client.post(approve, {"confirm_database": "db_main"})
    assert own_post.status_code == 409
    done = bob_client.post(approve, {"confirm_database": "db_main", "comment": "reviewed"})
    assert done.status_code == 303 and done["Location"] == f"{CONSOLE}runs/{run.pk}/"
    run.refresh_from_db()
    assert run.state == "queued" and run.job_id
    rows = set(AuditEvent.objects.filter(run=run).values_list("action", "outcome", "actor"))
    assert {("request", "requested", "alice"), ("approve", "approved", "bob")} <= rows
    assert ("approve", "refused", "alice") in rows


def test_a_rejected_request_never_runs_and_says_why(target, settings):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_approvals(settings, target)
    confirm(signed_in(make_user("superuser", "alice")))
    run = Run.objects.get()
    bob = signed_in(make_user("superuser", "bob"))
    answer = bob.post(
        f"{CONSOLE}requests/{run.pk}/reject/",
        {"confirm_database": "db_main", "comment": "not during the sale"},
    )
    assert answer.status_code == 303
    run.refresh_from_db()
    assert run.state == "rejected" and "not during the sale" in run.message
    page = bob.get(f"{CONSOLE}requests/{run.pk}/").content.decode()
    assert "not during the sale" in page and 'id="decision-form"' not in page


def test_the_plan_pages_not_before_field_schedules_the_run_in_the_browsers_time(target):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    client = signed_in(make_user("superuser", "alice"))
    at = (datetime.now(UTC) + timedelta(hours=3)).replace(second=0, microsecond=0)
    local = at + timedelta(hours=1)  # a browser one hour ahead of UTC (offset -60)
    answer = confirm(client, run_at=local.strftime("%Y-%m-%dT%H:%M"), run_at_offset="-60")
    assert answer.status_code == 303
    run = Run.objects.get()
    assert run.state == "scheduled" and run.run_at == at
    bad = confirm(client, run_at="next tuesday")
    assert bad.status_code == 400
    assert 'id="id_run_at_error"' in bad.content.decode()


@pytest.mark.browser
@pytest.mark.usefixtures("console_env")
def test_request_then_approval_by_another_user_then_progress_to_success(
    browser,  # noqa: F811 - fixture
    live_server,
    target,
    settings,
):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_approvals(settings, target)
    alice, bob = make_user("superuser", "alice"), make_user("superuser", "bob")
    page = signed_in_page(browser, live_server, alice)
    page.goto(PLAN)
    expect(page.locator("#needs-approval")).to_be_visible()
    page.fill("#id_confirm_database", "db_main")
    page.click("#confirm-submit")
    page.wait_for_url(re.compile(r".*/requests/\d+/$"))
    expect(page.locator("#decision-unavailable")).to_contain_text("your own request")
    url = page.url
    page.context.close()

    page = signed_in_page(browser, live_server, bob)
    page.goto("/admin/console/requests/")
    expect(page.locator("#open-requests")).to_contain_text("alice")
    screenshot(page, "console-requests.png")
    page.goto(url)
    page.fill("#id_comment", "read the plan, fine")
    page.fill("#id_confirm_database", "db_main")
    page.click("#approve-submit")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    page.wait_for_selector("#run-state[data-state='success']", timeout=60_000)
    assert target.table_exists("a")
    page.goto(url)
    expect(page.locator("#decisions")).to_contain_text("bob approved")
    page.context.close()
