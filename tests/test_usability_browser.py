"""The console for an operator at 3 a.m., in a real browser (issue 16): a hung target
leaves the overview fast, problems come first with their next step, a typo keeps
its place, a run in progress is followed rather than collided with, the run page
speaks, and a view-only user meets no dead link."""

import re
import time

import pytest
from playwright.sync_api import expect

from migration_console.core.models import Run
from tests.test_browser_console import browser  # noqa: F401 - fixture
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    make_user,
    wait_for_run,
)
from tests.test_usability_support import (
    add_target,
    drift,
    root_user,  # noqa: F401 - fixture
    signed_in_page,
    silent_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONSOLE = "/admin/console/"
STATUS = CONSOLE + "targets/db_main/"
PLAN = STATUS + "plan/"


@pytest.fixture
def root_page(browser, live_server, root_user):  # noqa: F811 - fixtures
    page = signed_in_page(browser, live_server, root_user)
    yield page
    page.context.close()


def test_a_target_that_never_answers_leaves_the_overview_fast_and_its_row_unknown(
    root_page, target
):
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    root_page.goto(CONSOLE)  # a server that has drawn the page before, as in production
    with silent_server() as port:
        add_target("db_hung", f"host=127.0.0.1 port={port} dbname=hung user=hung", target.path)
        started = time.monotonic()
        root_page.goto(CONSOLE)
        elapsed = time.monotonic() - started

        assert elapsed < 1.0, f"the overview took {elapsed:.2f} s"
        hung = root_page.locator("#targets tr[data-target='db_hung']")
        assert hung.get_attribute("data-known") == "false"
        assert hung.locator(".target-lock").inner_text() == "unknown"
        assert hung.locator(".target-pending").inner_text() == "unknown"
        assert hung.locator(".target-last-run").inner_text() == "unknown"
        assert "has not answered" in hung.locator(".target-error").inner_text()
        healthy = root_page.locator("#targets tr[data-target='db_main']")
        assert healthy.get_attribute("data-known") == "true"
        assert healthy.locator(".target-pending").inner_text() == "1"
        assert healthy.locator(".target-lock").inner_text() == "free"
        expect(root_page.locator("#overview-attention")).to_contain_text("did not answer")
        # The row loads on its own, and still guesses nothing when the target stays silent.
        with root_page.expect_response(re.compile(r"/db_hung/summary\.json$"), timeout=15_000):
            pass
        hung = root_page.locator("#targets tr[data-target='db_hung']")
        expect(hung).to_have_attribute("data-known", "false")
        assert hung.locator(".target-lock").inner_text() == "unknown"


def test_a_drifted_target_offers_repair_first_and_no_run_button(root_page, target):
    target.write("001_accounts.sql", "CREATE TABLE accounts (id int);\n")
    from tests.conftest import migrate_sql

    assert migrate_sql("run", "--yes")[0] == 0
    drift(target)
    target.write("002_more.sql", "CREATE TABLE more (id int);\n")

    root_page.goto(STATUS)

    banner = root_page.locator("#banner-drift-001")
    expect(banner).to_contain_text("DRIFTED")
    first = root_page.locator("#content-main > *:not(nav):not(.dsn)").first
    assert first.get_attribute("id") == "banners", "the banner is not the first thing"
    expect(root_page.locator("#review-plan")).to_have_count(0)
    expect(root_page.locator("#run-unavailable")).to_contain_text("Resolve the problems above")
    banner.get_by_role("link", name="Repair 001").click()
    expect(root_page).to_have_url(re.compile(r"/repair/\?version=001$"))
    assert root_page.locator("#id_pick").input_value() == "001"
    expect(root_page.locator("#repair-form")).to_be_visible()

    # The plan still offers the run, only with --allow-drift ticked.
    root_page.goto(PLAN)
    expect(root_page.locator("#id_allow_drift")).to_have_attribute("required", "")
    expect(root_page.locator("#banner-drift-001")).to_be_visible()


def test_a_typo_in_the_confirmation_keeps_the_text_and_puts_the_error_at_the_field(
    root_page, target
):
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    root_page.goto(PLAN)

    root_page.fill("#id_confirm_database", "db_mian")
    root_page.click("#confirm-submit")

    field = root_page.locator("#id_confirm_database")
    expect(field).to_have_value("db_mian")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    error = root_page.locator("#" + field.get_attribute("aria-describedby"))
    expect(error).to_contain_text("type the database name 'db_main'")
    assert field.bounding_box()["y"] < error.bounding_box()["y"] < field.bounding_box()["y"] + 80
    assert root_page.url.endswith(PLAN), root_page.url  # a reload lands on the plan
    assert not Run.objects.exists()
    root_page.reload()
    expect(root_page.locator("#confirm-form")).to_be_visible()


def test_a_rollback_typo_says_which_field_was_wrong_and_keeps_both(root_page, target):
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    target.write("001_first.down.sql", "DROP TABLE first;\n")
    from tests.conftest import migrate_sql

    assert migrate_sql("run", "--yes")[0] == 0
    root_page.goto(STATUS + "rollback/?to=001")

    root_page.fill("#id_confirm_database", "db_main")
    root_page.fill("#id_confirm_version", "01")
    root_page.click("#rollback-submit")

    expect(root_page.locator("#id_confirm_database")).to_have_value("db_main")
    expect(root_page.locator("#id_confirm_database")).not_to_have_attribute("aria-invalid", "true")
    version = root_page.locator("#id_confirm_version")
    expect(version).to_have_value("01")
    expect(version).to_have_attribute("aria-invalid", "true")
    expect(version).to_be_focused()
    expect(root_page.locator("#id_confirm_version_error")).to_contain_text("version '001'")
    assert "/confirm/" not in root_page.url


def running_run(target_name: str = "db_main", user: str = "alice") -> Run:
    from django.utils import timezone

    return Run.objects.create(
        target=target_name,
        action="run",
        channel="console",
        requested_by=user,
        planned=["001"],
        state="running",
        current_version="001",
        started_at=timezone.now(),
        attempts=1,
    )


def test_a_run_in_progress_is_linked_and_replaces_the_confirmation(root_page, target):
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    root_page.goto(PLAN)  # drawn before the other operator's run starts
    root_page.fill("#id_confirm_database", "db_main")
    run = running_run()

    root_page.click("#confirm-submit")

    expect(root_page.locator("#plan-error")).to_contain_text(f"#{run.pk} by alice is in progress")
    follow = root_page.locator("#banner-open-run").get_by_role("link", name="Follow it")
    expect(follow).to_have_attribute("href", f"{CONSOLE}runs/{run.pk}/")
    expect(root_page.locator("#confirm-form")).to_have_count(0)
    assert Run.objects.count() == 1
    root_page.goto(STATUS)
    expect(root_page.locator("#banner-open-run")).to_contain_text(
        f"Run #{run.pk} in progress by alice"
    )
    expect(root_page.locator("#review-plan")).to_have_count(0)


@pytest.mark.usefixtures("console_env")
def test_the_run_page_shows_time_speaks_and_gives_next_steps_after_a_failure(root_page, target):
    target.write("001_slow.sql", "SELECT pg_sleep(2);\nCREATE TABLE slow (id int);\n")
    target.write("002_broken.sql", "ALTER TABLE missing_table ADD COLUMN x int;\n")
    target.write("003_after.sql", "CREATE TABLE after_broken (id int);\n")
    root_page.goto(PLAN)
    root_page.fill("#id_confirm_database", "db_main")
    root_page.click("#confirm-submit")
    root_page.wait_for_url(re.compile(r".*/runs/\d+/$"))

    live = root_page.locator("#run-live")
    assert live.get_attribute("aria-live") == "polite"
    root_page.wait_for_selector("#run-steps-body tr.step-running[data-version='001']")
    expect(root_page.locator("#run-elapsed")).to_have_text(re.compile(r"^\d+(\.\d+)?m?s"))
    first = root_page.locator("#run-elapsed").inner_text()
    expect(root_page.locator("#run-elapsed")).not_to_have_text(first, timeout=3000)
    expect(live).to_contain_text("Running: 0 of 3 done, now 001_slow.sql")
    assert root_page.title().startswith("RUNNING · run #")

    root_page.wait_for_selector("#run-state[data-state='failed']", timeout=30_000)
    assert root_page.title().startswith("FAILED · run #")
    expect(live).to_contain_text("Finished: FAILED, 2 of 3 done.")
    steps = root_page.locator("#run-next-steps")
    expect(steps).to_be_visible()
    expect(steps).to_contain_text("002_broken.sql failed and was rolled back")
    expect(steps.get_by_role("link", name="Review the plan")).to_have_attribute("href", PLAN)
    expect(root_page.locator("#run-follow")).to_contain_text("This run has finished")
    not_run = root_page.locator("#run-steps-body tr[data-version='003'] .state")
    expect(not_run).to_have_text("NOT RUN")

    root_page.reload()  # the same words once the page is drawn by the server
    expect(root_page.locator("#run-steps-body tr[data-version='003'] .state")).to_have_text(
        "NOT RUN"
    )
    expect(root_page.locator("#run-steps-body tr[data-version='001'] .state")).to_have_text(
        "APPLIED"
    )
    expect(root_page.locator("#run-next-steps")).to_contain_text("rolled back")
    expect(root_page.locator("#run-follow")).not_to_contain_text("reopen this address")


def test_a_view_only_user_meets_no_link_that_answers_403(browser, live_server, target):  # noqa: F811
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    viewer = make_user("staff_view", username="viewer")
    page = signed_in_page(browser, live_server, viewer)
    try:
        seen: dict[str, int] = {}
        for url in ("/admin/", CONSOLE, STATUS, PLAN, STATUS + "history/"):
            assert page.goto(url).status == 200, url
            assert page.locator("a[href*='/admin/console/audit/']").count() == 0, url
            expect(page.locator("#review-plan")).to_have_count(0)
            for href in page.eval_on_selector_all(
                "a[href^='/']", "els => els.map(e => e.getAttribute('href'))"
            ):
                if href not in seen:
                    seen[href] = page.request.get(href, max_redirects=0).status
        dead = {href: status for href, status in seen.items() if status in (403, 404, 405)}
        assert dead == {}, dead
    finally:
        page.context.close()
