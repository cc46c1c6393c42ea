"""Issue 16 through Django's test client: one vocabulary, the lint summary where the
operator confirms, refusals that name their field, only pickable versions, the run
page's next steps and lock wait, one date format."""

import re

import pytest
from django.template.loader import render_to_string
from django.test import Client

from migration_console.console.words import STATE_WORDS, state_word
from migration_console.core.models import Run
from tests.conftest import migrate_sql
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    current_plan_hash,
    make_user,
)
from tests.test_usability_support import drift, finished_run, write_failing_plan

pytestmark = pytest.mark.django_db(transaction=True)

STATUS = "/admin/console/targets/db_main/"
PLAN = STATUS + "plan/"
RUN = STATUS + "run/"


@pytest.fixture
def root():
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    return client


@pytest.mark.parametrize(
    "state",
    [*STATE_WORDS, "pending", "failed", "drifted", "missing", "running", "queued", "success"],
)
def test_it_spells_each_state_the_same_in_pages_and_in_the_progress_json(state):
    chip = render_to_string("console/includes/state.html", {"state": state})
    assert re.search(r">([^<]*)</span>", chip).group(1) == state_word(state)


def test_it_counts_squawk_findings_at_the_top_and_in_the_confirmation(target, root):
    target.write("001_accounts.sql", "CREATE TABLE accounts (id bigserial PRIMARY KEY);\n")
    target.write("002_email.sql", "ALTER TABLE accounts ADD COLUMN email text NOT NULL;\n")

    page = root.get(PLAN).content.decode()

    top = re.search(r'id="lint-summary">([^<]*)<', page).group(1)
    box = re.search(r'id="confirm-lint-summary">([^<]*)<', page).group(1)
    assert re.search(r"\b1 error\b", top) and "1 error" in box
    assert page.index('id="lint-summary"') < page.index('id="plan"')
    assert page.index('id="confirm-lint-summary"') < page.index('id="confirm-submit"')


def test_a_failed_file_is_a_banner_with_its_next_steps_above_the_table(target, root):
    write_failing_plan(target)

    page = root.get(STATUS).content.decode()

    banner = re.search(r'<li class="error" id="banner-failed-002">(.*?)</li>', page, re.S).group(1)
    assert "002_broken.sql FAILED" in banner and "rolled back" in banner
    assert f'href="{PLAN}"' in banner and 'href="/admin/console/targets/db_main/#row-002"' in banner
    assert page.index('id="banners"') < page.index('id="migrations"')
    assert 'id="row-002"' in page


def test_it_refuses_a_drifted_run_at_the_checkbox_and_queues_nothing(target, root):
    target.write("001_accounts.sql", "CREATE TABLE accounts (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    drift(target)
    target.write("002_more.sql", "CREATE TABLE more (id int);\n")

    response = root.post(RUN, {"plan_hash": current_plan_hash(), "confirm_database": "db_main"})

    page = response.content.decode()
    assert response.status_code == 400
    assert 'aria-describedby="id_allow_drift_error"' in page
    assert 'id="id_allow_drift_error"' in page and "repair the drifted" in page
    assert 'name="confirm_database" value="db_main"' in page
    assert not Run.objects.filter(channel="console").exists()


def test_the_rollback_picker_offers_only_versions_it_can_roll_back(target, root):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    target.write("002_b.sql", "CREATE TABLE b (id int);\n")
    target.write("002_b.down.sql", "DROP TABLE b;\n")
    target.write("003_c.sql", "CREATE TABLE c (id int);\n")
    target.write("003_c.down.sql", "DROP TABLE c;\n")
    assert migrate_sql("run", "--yes")[0] == 0

    status = root.get(STATUS).content.decode()
    review = root.get(STATUS + "rollback/").content.decode()

    for page, form in ((status, "rollback-actions"), (review, "rollback-pick")):
        picker = page.split(f'id="{form}"')[1].split("</form>")[0]
        offered = re.findall(r'<option value="(\d+)"', picker)
        assert "003" in offered and "002" in offered and "001" not in offered, offered


def test_the_run_json_speaks_one_vocabulary_and_is_ready_for_lock_waits(target, root):
    write_failing_plan(target)
    run = finished_run("db_main", failed=True)

    data = root.get(f"/admin/console/runs/{run.pk}/progress.json").json()

    assert data["state_label"] == "FAILED"
    assert [row["label"] for row in data["rows"]] == ["APPLIED", "FAILED", "NOT RUN"]
    assert data["lock_wait"] is None and data["blockers"] == []
    assert "rolled back" in data["next_steps"]["text"]
    assert data["title"].startswith("FAILED · run #")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", data["finished_at"])


def test_the_run_page_names_who_blocks_a_lock_wait(target, root):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    run = finished_run("db_main", failed=False)
    Run.objects.filter(pk=run.pk).update(
        state="running",
        finished_at=None,
        lock_wait={
            "version": "001",
            "filename": "001_a.sql",
            "attempt": 2,
            "attempts_allowed": 11,
            "next_attempt_in_seconds": 4,
            "message": "001_a.sql waits for a lock on accounts",
            "blockers": [
                {
                    "pid": 4242,
                    "user": "app",
                    "application_name": "billing",
                    "state": "idle in transaction",
                    "xact_age_seconds": 95,
                    "query": "UPDATE accounts SET x = 1",
                }
            ],
        },
    )

    page = root.get(f"/admin/console/runs/{run.pk}/").content.decode()

    box = page.split('id="run-lock-wait"')[1].split("</div>")[0]
    assert "hidden" not in box.split(">")[0]
    assert "attempt 2 of 11" in box and "pid 4242" in box and "billing" in box
    assert "UPDATE accounts SET x = 1" in box


def test_every_console_time_uses_one_format(target, root):
    write_failing_plan(target)
    finished_run("db_main", failed=True)
    pattern = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    for url in (STATUS, STATUS + "history/", "/admin/console/audit/", "/admin/console/"):
        page = root.get(url).content.decode()
        assert pattern.search(page), url
        assert not re.search(r"\b[A-Z][a-z]{2}\. \d{1,2}, \d{4}", page), url  # "Dec. 2, 2026"
    audit = root.get("/admin/console/audit/").content.decode()
    assert 'placeholder="YYYY-MM-DD"' in audit and 'type="date"' not in audit


def test_the_login_limit_answers_in_the_admin_look_with_the_wait_and_a_way_back(db, settings):
    settings.CONSOLE_LOGIN_RATE = "2/h"  # fixed windows: an hour is never crossed mid-test
    make_user("superuser", username="root")
    client = Client()
    url = "/admin/login/?next=/admin/console/"

    answers = [client.post(url, {"username": "root", "password": "guess"}) for _ in range(3)]

    limited = answers[-1]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert limited["Content-Type"].startswith("text/html")
    page = limited.content.decode()
    assert "<h1" in page and "Too many sign-in attempts" in page
    assert "up to 1 hour" in page
    assert f'href="{url}" id="login-again"' in page


def test_a_token_page_has_a_revoke_button_that_revokes_it(root):
    from accounts.models import ApiToken
    from accounts.tokens import token_create

    token = token_create(user=make_user("staff_view", username="ci"), name="deploys")
    record = ApiToken.objects.get(user__username="ci")
    page = root.get(f"/admin/accounts/apitoken/{record.pk}/change/").content.decode()
    assert 'id="token-revoke"' in page

    form = dict(re.findall(r'name="(action|_selected_action|index)" value="([^"]*)"', page))
    response = root.post("/admin/accounts/apitoken/", form)

    assert response.status_code == 302
    record.refresh_from_db()
    assert record.revoked_at is not None and token.raw
    again = root.get(f"/admin/accounts/apitoken/{record.pk}/change/").content.decode()
    assert 'id="token-revoke"' not in again
