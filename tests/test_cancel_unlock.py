"""Cancel a run, break a stuck lock (core/services/control.py) from the three channels,
against real runner processes: a CLI runner cancelled inside a sleeping file, one
frozen with SIGSTOP while it holds the lock, and an unrelated session holding it."""

import json
import os
import signal
import time

import psycopg
import pytest
from django.core.cache import cache
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.control import lock_inspect
from migration_console.core.services.locking import lock_key
from tests.api_support import API, bearer, run_body
from tests.conftest import migrate_sql, run_manage
from tests.faults import finish, kill_runner, start_runner, wait_for_query
from tests.test_api_openapi import assert_documented
from tests.test_console_support import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CANCEL_WITHIN_SECONDS = 5.0


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def root(django_user_model):
    return make_user("superuser", username="root")


@pytest.fixture
def runners():
    """Runner processes started by a test; killed (stopped ones too) at its end."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            kill_runner(process)


def write_slow_set(target) -> None:
    """001 lands; 002 inserts a row, then sleeps as long as sleep_for says; 003 after."""
    target.query("CREATE TABLE side_effects (version int)")
    target.query("CREATE TABLE sleep_for (seconds float)")
    target.query("INSERT INTO sleep_for VALUES (60)")
    target.write("001_fast.sql", "INSERT INTO side_effects VALUES (1);\n")
    target.write(
        "002_slow.sql",
        "INSERT INTO side_effects VALUES (2);\nSELECT pg_sleep((SELECT seconds FROM sleep_for));\n",
    )
    target.write("003_after.sql", "INSERT INTO side_effects VALUES (3);\n")


def start_sleeping_run(target, cli_env, runners) -> tuple:
    """A CLI runner busy in 002's pg_sleep; (process, its Run, its backend pid)."""
    process = start_runner(cli_env)
    runners.append(process)
    pid = wait_for_query(target.dsn, "pg_sleep(", timeout=60)
    return process, Run.objects.get(state=Run.State.RUNNING), pid


def side_effects(target) -> list[int]:
    return sorted(row[0] for row in target.query("SELECT version FROM side_effects"))


def assert_cancelled_cleanly(target, run: Run, process, elapsed: float) -> None:
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED, (run.state, run.message)
    assert elapsed < CANCEL_WITHIN_SECONDS, elapsed
    assert run.message.startswith("cancelled by "), run.message
    assert "applied before it: 001" in run.message
    code, output = finish(process, timeout=30)
    assert code == 1, output  # the plan did not complete: a cancelled run is no success
    assert "CANCELLED" in output and "cancelled by" in output, output
    assert side_effects(target) == [1], "002's insert must have rolled back with it"
    assert {v: row[0] for v, row in target.tracking().items()} == {"001": "completed"}
    assert lock_inspect(target_name=target.name).holder is None
    request = AuditEvent.objects.get(action="cancel", run=run)
    assert request.outcome == AuditEvent.Outcome.SUCCESS, request.message
    assert "ended cancelled" in request.message
    own = AuditEvent.objects.get(action="run", run=run)
    assert own.outcome == AuditEvent.Outcome.CANCELLED
    assert own.migrations == ["001", "002"]


# --- cancel a running run ------------------------------------------------------------
def test_migrate_sql_cancel_stops_a_cli_run_inside_a_sleeping_file(target, cli_env, runners):
    write_slow_set(target)
    process, run, _ = start_sleeping_run(target, cli_env, runners)

    started = time.monotonic()
    code, output = migrate_sql("cancel", str(run.pk))
    elapsed = time.monotonic() - started

    assert code == 0, output
    assert f"Run #{run.pk} cancelled" in output
    assert_cancelled_cleanly(target, run, process, elapsed)
    target.query("UPDATE sleep_for SET seconds = 0")
    assert migrate_sql("run", "--yes")[0] == 0  # the rest of the plan applies next time
    assert side_effects(target) == [1, 2, 3]


def test_the_api_cancels_a_running_cli_run(target, cli_env, runners, root):
    write_slow_set(target)
    process, run, _ = start_sleeping_run(target, cli_env, runners)
    token = token_create(user=root, name="tests").raw

    started = time.monotonic()
    response = Client().post(
        f"{API}runs/{run.pk}/cancel",
        run_body(),
        content_type="application/json",
        headers=bearer(token),
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.content
    assert_documented(response, "runs/{run_id}/cancel", "POST")
    body = response.json()
    assert (body["id"], body["state"], body["cancel_requested_by"]) == (run.pk, "cancelled", "root")
    assert_cancelled_cleanly(target, run, process, elapsed)
    assert AuditEvent.objects.get(action="cancel", run=run).channel == "api"


def test_the_console_cancel_button_stops_a_running_cli_run_after_typed_confirmation(
    target, cli_env, runners, root
):
    write_slow_set(target)
    process, run, _ = start_sleeping_run(target, cli_env, runners)
    browser = Client()
    browser.force_login(root)
    url = f"/admin/console/runs/{run.pk}/cancel/"

    page = browser.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert 'id="run-cancel"' in page and f'action="{url}"' in page

    wrong = browser.post(url, {"confirm_database": "db_other"})
    assert wrong.status_code == 400
    assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING
    assert AuditEvent.objects.get(action="cancel", outcome="refused").target == "db_main"

    started = time.monotonic()
    response = browser.post(url, {"confirm_database": "db_main"})
    elapsed = time.monotonic() - started

    assert response.status_code == 303 and response["Location"] == f"/admin/console/runs/{run.pk}/"
    assert_cancelled_cleanly(target, run, process, elapsed)
    finished_page = browser.get(response["Location"]).content.decode()
    assert 'id="run-cancel"' not in finished_page
    assert AuditEvent.objects.get(action="cancel", outcome="success").channel == "console"


def test_the_console_cancel_needs_csrf_and_a_superuser(target, root):
    run = queued_run()
    url = f"/admin/console/runs/{run.pk}/cancel/"
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(root)
    assert strict.post(url, {"confirm_database": "db_main"}).status_code == 403
    staff = Client()
    staff.force_login(make_user("staff_view"))
    assert staff.post(url, {"confirm_database": "db_main"}).status_code == 403
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED
    assert set(AuditEvent.objects.values_list("outcome", flat=True)) == {"denied"}


def test_a_frozen_runner_is_reported_still_running_then_ends_cancelled_once_resumed(
    target, cli_env, runners
):
    write_slow_set(target)
    process, run, _ = start_sleeping_run(target, cli_env, runners)
    os.killpg(process.pid, signal.SIGSTOP)

    started = time.monotonic()
    code, output = migrate_sql("cancel", str(run.pk))
    assert code == 1, output
    assert time.monotonic() - started < CANCEL_WITHIN_SECONDS + 2
    assert "still running" in output and "unlock --database db_main --force" in output
    run.refresh_from_db()
    assert (run.state, run.cancel_requested_by) == (Run.State.RUNNING, "root")
    assert AuditEvent.objects.get(action="cancel").outcome == "failed"

    os.killpg(process.pid, signal.SIGCONT)  # its statement was cancelled meanwhile
    assert finish(process, timeout=30)[0] == 1
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED, run.message
    assert side_effects(target) == [1]


# --- cancel a queued or finished run --------------------------------------------------
def queued_run(**fields) -> Run:
    return Run.objects.create(
        target="db_main", action="run", channel="console", requested_by="alice", **fields
    )


def test_a_queued_run_is_withdrawn_at_once(target):
    run = queued_run()
    code, output = migrate_sql("cancel", str(run.pk))
    assert code == 0, output
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED and run.finished_at is not None
    assert run.message.endswith("before it started") and run.cancel_requested_by
    row = AuditEvent.objects.get(action="cancel")
    assert (row.outcome, row.run_id, row.target) == ("success", run.pk, "db_main")


def test_a_queued_runs_job_that_cannot_be_withdrawn_still_leaves_the_run_cancelled(target):
    run = queued_run(job_id=987654)  # no such job: as if a worker had picked it up
    assert migrate_sql("cancel", str(run.pk))[0] == 0
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert "job 987654" in AuditEvent.objects.get(action="cancel").message


@pytest.mark.parametrize("state", ["success", "failed", "cancelled"])
def test_a_finished_run_cannot_be_cancelled(target, state):
    run = queued_run(state=state)
    code, output = migrate_sql("cancel", str(run.pk))
    assert code == 2
    assert f"already finished: {state}" in output
    assert Run.objects.get(pk=run.pk).state == state
    assert AuditEvent.objects.get(action="cancel").outcome == "refused"


def test_cancel_refuses_an_unknown_run_and_a_run_id_that_is_no_number(target):
    assert migrate_sql("cancel", "999999") == (2, "there is no run #999999")
    assert migrate_sql("cancel", "abc")[0] == 2
    assert migrate_sql("cancel")[0] == 2
    assert AuditEvent.objects.get(action="cancel").outcome == "refused"


def test_the_api_answers_404_and_409_for_unknown_and_finished_runs(target, root):
    token = token_create(user=root, name="tests").raw
    client = Client()

    def cancel(run_id, body=None):
        response = client.post(
            f"{API}runs/{run_id}/cancel",
            run_body() if body is None else body,
            content_type="application/json",
            headers=bearer(token),
        )
        assert_documented(response, "runs/{run_id}/cancel", "POST")
        return response

    assert cancel(999999).status_code == 404
    assert cancel(queued_run(state="success").pk).json()["reason"] == "finished"
    assert cancel(queued_run().pk, body="{}").status_code == 400
    withdrawn = cancel(queued_run().pk)
    assert (withdrawn.status_code, withdrawn.json()["state"]) == (200, "cancelled")
    assert (
        client.post(f"{API}runs/1/cancel", run_body(), content_type="application/json").status_code
        == 401
    )
    outcomes = sorted(AuditEvent.objects.filter(action="cancel").values_list("outcome", flat=True))
    assert outcomes == ["denied", "refused", "refused", "refused", "success"]


# --- break the lock -------------------------------------------------------------------
def test_a_frozen_runners_lock_is_broken_only_with_force(target, cli_env, runners, root):
    write_slow_set(target)
    process, run, backend = start_sleeping_run(target, cli_env, runners)
    os.killpg(process.pid, signal.SIGSTOP)  # frozen inside 002, holding the lock

    code, output = migrate_sql("unlock", "--yes")
    assert code == 2
    assert f"held by run #{run.pk} (requested by {run.requested_by})" in output
    assert f"migrate_sql cancel {run.pk}" in output and "--force" in output
    assert lock_inspect(target_name="db_main").holder.pid == backend

    browser = Client()
    browser.force_login(root)
    page = browser.get("/admin/console/targets/db_main/").content.decode()
    assert 'id="break-lock"' in page and 'id="id_unlock_force"' in page
    assert f'name="holder_pid" value="{backend}"' in page
    token = token_create(user=root, name="tests").raw
    refused = Client().post(
        f"{API}unlock", run_body(), content_type="application/json", headers=bearer(token)
    )
    assert refused.status_code == 409 and refused.json()["reason"] == "live_run"
    assert_documented(refused, "unlock", "POST")

    code, output = migrate_sql("unlock", "--force", "--yes", "--json")
    assert code == 0, output
    answer = json.loads(output)
    assert (answer["status"], answer["run"], answer["holder"]["pid"]) == (
        "unlocked",
        run.pk,
        backend,
    )
    assert lock_inspect(target_name="db_main").holder is None
    assert not target.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend])
    rows = AuditEvent.objects.filter(action="unlock").order_by("id")
    assert [r.outcome for r in rows] == ["refused", "refused", "success"]
    assert f"pid {backend}" in rows[2].message and f"run#{run.pk}" in rows[2].message
    assert "(forced)" in rows[2].message

    target.query("UPDATE sleep_for SET seconds = 0")
    next_run = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert next_run.returncode == 0, next_run.stdout + next_run.stderr
    assert side_effects(target) == [1, 2, 3]


def test_an_unrelated_holder_is_terminated_without_force(target, cli_env):
    key = lock_key(target.dbname, "public")
    with psycopg.connect(target.dsn, autocommit=True, application_name="someone-else") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        pid = holder.info.backend_pid

        no_tty = run_manage(cli_env, "migrate_sql", "unlock")
        assert no_tty.returncode == 2, no_tty.stderr
        assert f"pid {pid}" in no_tty.stdout and "--yes" in no_tty.stderr

        code, output = migrate_sql("unlock", "--yes")
        assert code == 0, output
        assert f"pid {pid}" in output and "someone-else" in output and "is free" in output
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    assert lock_inspect(target_name="db_main").holder is None
    row = AuditEvent.objects.get(action="unlock")
    assert row.outcome == "success" and "someone-else" in row.message and row.channel == "cli"


def test_unlock_with_nothing_held_says_so_and_exits_0(target):
    assert migrate_sql("unlock", "--yes") == (0, "db_main is not locked; nothing to break.\n")
    assert AuditEvent.objects.get(action="unlock").outcome == "success"


def test_the_console_breaks_the_lock_it_showed_and_no_other(target, root):
    key = lock_key(target.dbname, "public")
    browser = Client()
    browser.force_login(root)
    url = "/admin/console/targets/db_main/unlock/"
    with psycopg.connect(target.dsn, autocommit=True, application_name="stuck") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        pid = holder.info.backend_pid
        page = browser.get("/admin/console/targets/db_main/").content.decode()
        assert 'id="break-lock"' in page and 'id="id_unlock_force"' not in page

        changed = browser.post(url, {"confirm_database": "db_main", "holder_pid": str(pid + 1)})
        assert changed.status_code == 409 and "holder changed" in changed.content.decode()
        untyped = browser.post(url, {"confirm_database": "db_mian", "holder_pid": str(pid)})
        assert untyped.status_code == 400
        assert lock_inspect(target_name="db_main").holder.pid == pid

        done = browser.post(url, {"confirm_database": "db_main", "holder_pid": str(pid)})
        assert done.status_code == 303
        assert done["Location"] == "/admin/console/targets/db_main/"
    assert lock_inspect(target_name="db_main").holder is None
    outcomes = list(
        AuditEvent.objects.filter(action="unlock").order_by("id").values_list("outcome", flat=True)
    )
    assert outcomes == ["refused", "refused", "success"]


def test_the_api_unlock_frees_an_unrelated_holder_and_answers_not_locked_after(target, root):
    token = token_create(user=root, name="tests").raw

    def unlock(body=None):
        response = Client().post(
            f"{API}unlock?database=db_main",
            run_body() if body is None else body,
            content_type="application/json",
            headers=bearer(token),
        )
        assert_documented(response, "unlock", "POST")
        return response

    key = lock_key(target.dbname, "public")
    with psycopg.connect(target.dsn, autocommit=True, application_name="stuck") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        pid = holder.info.backend_pid
        assert unlock(json.dumps({"confirm": True, "force": "yes"})).status_code == 400
        freed = unlock()
    assert freed.status_code == 200
    assert (freed.json()["status"], freed.json()["holder"]["pid"]) == ("unlocked", pid)
    assert unlock().json()["status"] == "not_locked"
