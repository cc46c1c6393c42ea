"""The console in a real browser: Playwright driving Debian's headless chromium.

Set CONSOLE_SCREENSHOT_DIR (scripts/screenshot.py does) to save the status and
progress pages as PNGs for the README.
"""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from migration_console.core.models import Run
from tests.test_console_support import (  # noqa: F401 - fixtures
    PASSWORD,
    _fresh_rate_limits,
    console_env,
    make_user,
    wait_for_run,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django's ORM calls made
    # by the test itself (fixtures, assertions) are still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    # Nothing may leave loopback (no CDN, no fonts): fail loudly if a page tries.
    outside = []

    def guard(route):
        host = re.match(r"https?://([^/:]+)", route.request.url)
        if host and host.group(1) not in ("127.0.0.1", "localhost", "[::1]"):
            outside.append(route.request.url)
            return route.abort()
        return route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    yield page
    context.close()
    assert outside == [], f"pages reached outside loopback: {outside}"


def screenshot(page, name: str) -> None:
    """The page in the light theme as ``name``, and in the dark one as ``name-dark``."""
    directory = os.environ.get("CONSOLE_SCREENSHOT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / name), full_page=True)
        page.emulate_media(color_scheme="dark")
        dark = name.replace(".png", "-dark.png")
        page.screenshot(path=str(Path(directory) / dark), full_page=True)
        page.emulate_media(color_scheme="light")


def log_in(page, username: str = "root") -> None:
    page.goto("/admin/console/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/console/")


def confirm_run(page) -> None:
    page.fill("#id_confirm_database", "db_main")
    page.click("#confirm-submit")
    page.wait_for_url(re.compile(r".*/admin/console/runs/\d+/$"))


@pytest.mark.usefixtures("console_env")
def test_a_superuser_plans_confirms_and_watches_a_run_complete(page, target):
    target.write(
        "001_create_accounts.sql",
        "CREATE TABLE accounts (\n    id bigserial PRIMARY KEY,\n    email text NOT NULL\n);\n",
    )
    target.write(
        "002_accounts_email_index.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY accounts_email_idx "
        "ON accounts (email);\n",
    )
    target.write(
        "003_backfill.sql",
        "SELECT pg_sleep(0.4);\nINSERT INTO accounts (email) VALUES ('ops@example.test');\n",
    )
    make_user("superuser", username="root")

    log_in(page)
    page.click("#targets a:text('db_main')")
    expect(page.locator("#migrations tr[data-status='pending']")).to_have_count(3)

    page.click("#review-plan")
    expect(page.locator("#plan pre.sql")).to_have_count(3)
    assert "CREATE INDEX CONCURRENTLY" in page.locator("#plan").inner_text()
    page.fill("#id_confirm_database", "db_main")
    screenshot(page, "console-plan.png")
    confirm_run(page)

    page.wait_for_selector("#run-state[data-state='success']")
    steps = page.locator("#run-steps-body tr.step")
    assert steps.count() == 3
    assert page.locator("#run-steps-body tr.step-completed").count() == 3
    assert "applied 3 migration(s)" in page.locator("#run-message").inner_text()
    screenshot(page, "console-progress.png")

    page.click("text=History of db_main")
    expect(page.locator("#duration-chart svg rect")).to_have_count(3)
    screenshot(page, "console-history.png")
    applied = page.locator("#applied").inner_text()
    assert "001_create_accounts.sql" in applied and "003_backfill.sql" in applied

    page.goto("/admin/console/audit/?action=run")
    row = page.locator("#audit tr[data-action='run']").first
    assert row.get_attribute("data-outcome") == "success"
    assert "root" in row.inner_text() and "001 002 003" in row.inner_text()

    # the status page once a new file has arrived: applied rows with who/when/how long
    target.write(
        "004_accounts_last_login.sql", "ALTER TABLE accounts ADD COLUMN last_login timestamptz;\n"
    )
    page.goto("/admin/console/targets/db_main/")
    expect(page.locator("#migrations tr[data-status='completed']")).to_have_count(3)
    expect(page.locator("#migrations tr[data-status='pending']")).to_have_count(1)
    assert "root" in page.locator("#migrations").inner_text()
    screenshot(page, "console.png")
    assert target.scalar("SELECT count(*) FROM accounts") == 1


@pytest.mark.usefixtures("console_env")
def test_a_failing_migration_shows_the_database_message(page, target):
    target.write("001_ok.sql", "CREATE TABLE ok_table (id int);\n")
    target.write("002_broken.sql", "ALTER TABLE missing_table ADD COLUMN x int;\n")
    make_user("superuser", username="root")

    log_in(page)
    page.goto("/admin/console/targets/db_main/plan/")
    confirm_run(page)

    page.wait_for_selector("#run-state[data-state='failed']")
    assert page.locator("#run-steps-body tr.step-completed").count() == 1
    error = page.locator("#run-steps-body pre.db-error").inner_text()
    assert 'relation "missing_table" does not exist' in error
    assert "002_broken" in page.locator("#run-message").inner_text()


@pytest.mark.usefixtures("console_env")
def test_a_slow_run_keeps_going_after_the_page_is_closed(page, target):
    target.write("001_slow.sql", "SELECT pg_sleep(2);\nCREATE TABLE slow_done (id int);\n")
    target.write("002_after.sql", "CREATE TABLE after_slow (id int);\n")
    make_user("superuser", username="root")

    log_in(page)
    page.goto("/admin/console/targets/db_main/plan/")
    confirm_run(page)
    progress_url = page.url
    run_id = int(re.search(r"/runs/(\d+)/", progress_url).group(1))
    context = page.context
    page.close()  # the browser goes away mid-run

    reopened = context.new_page()
    reopened.goto(progress_url)
    reopened.wait_for_selector("#run-steps-body tr.step-running[data-version='001']")
    assert Run.objects.get(pk=run_id).state == "running"
    reopened.close()

    run = wait_for_run(run_id)
    assert run.state == "success", run.message
    assert target.table_exists("after_slow")

    last = context.new_page()
    last.goto(progress_url)
    assert last.locator("#run-state").get_attribute("data-state") == "success"
    assert last.locator("#run-steps-body tr.step-completed").count() == 2
