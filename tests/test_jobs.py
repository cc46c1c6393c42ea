"""Runs are jobs executed by `manage.py migration_worker` processes: console and API runs,
the synchronous API and its 202, a worker killed or stopped mid-run, runs side by side
on two targets and one after the other on one, and the warning when no worker lives."""

import json
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.caller import Caller
from migration_console.core.services.jobs import run_start
from tests.api_support import API, bearer
from tests.conftest import JOB_TABLES, ROOT, WORKER_TEST_ENV, live_workers, write_numbered
from tests.test_api_live import free_port
from tests.test_console_support import current_plan_hash, make_user, run_id_from

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _empty_job_queue(transactional_db):
    """Jobs left by an earlier test module (a request approved without a worker, a
    scheduled run withdrawn) must not count here: Django's flush leaves procrastinate's
    tables alone."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(JOB_TABLES)} CASCADE")


CONSOLE_ROOT = Caller(actor="root", channel="console")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    token = token_create(user=root, name="tests").raw

    class Api:
        def get(self, endpoint):
            return client.get(API + endpoint, headers=bearer(token))

        def post(self, endpoint="run", **body):
            return client.post(
                API + endpoint,
                data=json.dumps({"confirm": True, **body}),
                content_type="application/json",
                headers=bearer(token),
            )

    return Api()


def wait_until(check, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(poll)


def settled(run_id: int, timeout: float = 60) -> Run:
    def check():
        run = Run.objects.get(pk=run_id)
        return run if run.finished else None

    return wait_until(check, timeout, f"run {run_id} finished")


def effects(target, table: str = "effects") -> list[str]:
    if not target.table_exists(table):
        return []
    return [row[0] for row in target.query(f"SELECT what FROM {table} ORDER BY id")]


def slow_files(target, count: int, seconds: float) -> None:
    """``count`` files that each record their side effect once, then sleep."""
    target.write("000_effects.sql", "CREATE TABLE effects (id serial, what text unique);\n")
    for i in range(1, count + 1):
        target.write(
            f"{i:03d}_slow{i}.sql",
            f"INSERT INTO effects (what) VALUES ('file {i}');\nSELECT pg_sleep({seconds});\n",
        )


@pytest.fixture(autouse=True)
def _no_job_left_behind():
    """A job queued by a test without a worker must not wait for the next test's."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(JOB_TABLES)} CASCADE")


def jobs_in_queue() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, queue_name, lock, args::text, status FROM procrastinate_jobs")
        return cursor.fetchall()


# --- enqueueing ------------------------------------------------------------------------------
def test_a_run_and_its_job_are_written_in_one_transaction(target):
    with pytest.raises(RuntimeError), transaction.atomic():
        run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash="")
        raise RuntimeError("the request failed after queueing")

    assert not Run.objects.exists() and jobs_in_queue() == []
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash="", planned=["001"])
    assert jobs_in_queue() == [
        (run.job_id, "migrations", "target:db_main", json.dumps({"run_id": run.pk}), "todo")
    ]
    assert (run.state, run.attempts, run.planned) == ("queued", 0, ["001"])


def test_the_job_queue_lives_in_the_console_database_never_in_a_target(target):
    from procrastinate.contrib.django.models import ProcrastinateJob

    from migration_console.core.routers import TargetDatabaseRouter

    router = TargetDatabaseRouter()
    assert router.allow_migrate("db_main", "procrastinate") is False
    assert router.allow_migrate("default", "procrastinate") is True
    assert router.db_for_read(ProcrastinateJob) == router.db_for_write(ProcrastinateJob)
    assert router.db_for_read(ProcrastinateJob) == "default"
    assert not target.table_exists("procrastinate_jobs")


# --- console and API runs, executed by a worker -----------------------------------------
def test_a_console_run_is_a_job_that_a_worker_executes(target, worker):
    write_numbered(target, 2)
    client = Client()
    client.force_login(make_user("superuser", username="root"))

    response = client.post(
        "/admin/console/targets/db_main/run/",
        {"plan_hash": current_plan_hash(), "confirm_database": "db_main"},
    )

    assert response.status_code == 303
    run = settled(run_id_from(response))
    assert (run.state, run.attempts, run.channel) == ("success", 1, "console")
    assert run.job_id is not None
    assert [step["version"] for step in run.steps] == ["001", "002"]
    assert target.table_exists("t2")
    event = AuditEvent.objects.get(action="run")
    assert (event.outcome, event.actor, event.run_id) == ("success", "root", run.pk)


def test_the_api_waits_for_its_job_and_answers_as_before(api, target, worker):
    write_numbered(target, 2)

    response = api.post()

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["applied_count"]) == ("success", 2)
    assert [m["version"] for m in body["applied_migrations"]] == ["001", "002"]
    again = api.post()
    assert again.json() == {"status": "up_to_date", "message": "no pending migrations"}
    assert Run.objects.filter(channel="api", attempts=1).count() == 2


def test_wait_false_answers_202_and_the_run_page_says_success_later(api, target, worker):
    write_numbered(target, 1)

    response = api.post(wait=False)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body == {"status": "queued", "run": body["run"], "url": f"{API}runs/{body['run']}"}
    settled(body["run"])
    detail = api.get(f"runs/{body['run']}").json()
    assert detail["state"] == "success" and detail["attempts"] == 1
    assert set(detail) == {
        "run",
        "database",
        "action",
        "state",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "attempts",
        "steps",
        "blockers",
        "message",
    }
    assert [(s["version"], s["status"]) for s in detail["steps"]] == [("001", "completed")]
    assert detail["blockers"] == [] and detail["requested_by"] == "root"


def test_a_wait_that_runs_out_answers_202(api, target, settings):
    settings.MIGRATION_API_WAIT = 0.5
    write_numbered(target, 1)

    response = api.post()  # no worker: the job stays queued

    assert response.status_code == 202
    assert Run.objects.get(pk=response.json()["run"]).state == "queued"


# --- a worker killed or stopped mid-run ----------------------------------------------------
def test_a_run_whose_worker_is_killed_is_finished_by_another_once(target, start_worker):
    slow_files(target, 3, seconds=0.2)
    # Longer than the 2 s in which a dead client's backend is noticed: rolled back.
    target.write(
        "002_slow2.sql", "INSERT INTO effects (what) VALUES ('file 2');\nSELECT pg_sleep(6);\n"
    )
    first = start_worker()[0]
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
    wait_until(
        lambda: effects(target) == ["file 1"] and runner_busy(target, run), 60, "file 2 running"
    )
    first.send(signal.SIGKILL)
    killed_at = time.monotonic()
    # Queued meanwhile: the dead worker's job keeps the target's job lock until it is
    # handed over, and then goes first.
    later = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash="")
    start_worker()

    run = settled(run.pk, timeout=120)

    assert time.monotonic() - killed_at < 120
    assert (run.state, run.attempts) == ("success", 2), run.message
    later = settled(later.pk)
    assert (later.state, later.attempts) == ("up_to_date", 1), later.message
    assert later.started_at >= run.finished_at
    assert effects(target) == ["file 1", "file 2", "file 3"]
    assert {v: row[0] for v, row in target.tracking().items()} == dict.fromkeys(
        ["000", "001", "002", "003"], "completed"
    )
    assert sorted(step["version"] for step in run.steps) == ["000", "001", "002", "003"]
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    page = client.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert '<td id="run-attempts">2 (a worker stopped or died' in page


def runner_busy(target, run: Run) -> bool:
    """The run's runner is inside a statement (a file's pg_sleep) on the target."""
    return bool(
        target.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND starts_with(application_name, %s) AND query LIKE '%%pg_sleep%%'",
            [f"migration-console run#{run.pk} "],
        )
    )


def test_a_worker_stopped_mid_run_finishes_its_file_and_another_resumes(target, start_worker):
    slow_files(target, 3, seconds=1.5)
    first = start_worker()[0]
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
    wait_until(
        lambda: effects(target) == ["file 1"] and runner_busy(target, run), 60, "file 2 running"
    )
    start_worker()

    first.send(signal.SIGTERM)

    assert first.process.wait(30) == 0, first.output()
    assert effects(target) == ["file 1", "file 2"]  # its current file, and no further one
    assert "stopping after the current file" in first.output()
    run = settled(run.pk, timeout=60)
    assert (run.state, run.attempts) == ("success", 2), run.message
    assert effects(target) == ["file 1", "file 2", "file 3"]
    assert [step["status"] for step in run.steps] == ["completed"] * 4
    assert AuditEvent.objects.filter(run=run, outcome="success").count() == 1


# --- side by side, one after the other ----------------------------------------------------
def sleepy(target, seconds: float) -> None:
    target.write("001_sleepy.sql", f"SELECT pg_sleep({seconds});\nCREATE TABLE slept (id int);\n")


def test_two_workers_run_two_targets_at_once(target, make_target, start_worker):
    first, second = target, make_target("db_other")
    sleepy(first, 2)
    sleepy(second, 2)
    start_worker(2)

    runs = [
        run_start(target_name=name, caller=CONSOLE_ROOT, plan_hash="")
        for name in ("db_main", "db_other")
    ]
    one, other = (settled(run.pk) for run in runs)

    assert (one.state, other.state) == ("success", "success")
    assert one.started_at < other.finished_at and other.started_at < one.finished_at
    assert first.table_exists("slept") and second.table_exists("slept")


def test_two_runs_on_one_target_run_one_after_the_other(target, start_worker):
    sleepy(target, 1.5)
    start_worker(2)

    runs = [run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash="") for _ in (1, 2)]
    first, then = (settled(run.pk) for run in runs)

    assert (first.state, then.state) == ("success", "up_to_date"), (first.message, then.message)
    assert then.started_at >= first.finished_at
    assert first.job_id != then.job_id


# --- no worker ------------------------------------------------------------------------------
def test_without_a_worker_the_console_warns_and_the_metric_reads_zero(target, start_worker):
    write_numbered(target, 1)
    client = Client()
    client.force_login(make_user("superuser", username="root"))
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
    page = f"/admin/console/runs/{run.pk}/"
    assert 'id="no-worker"' not in client.get("/admin/console/").content.decode()  # < 10 s
    # Past the 10 s of the warning, and the 15 s after which a run without a session on
    # its target counts as abandoned: a run whose job waits is not, it is the workers'.
    Run.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(seconds=20))

    assert 'id="no-worker"' in client.get("/admin/console/").content.decode()
    assert 'id="run-no-worker"' in client.get(page).content.decode()
    assert Run.objects.get(pk=run.pk).state == "queued"
    metrics = client.get("/metrics").content.decode()
    assert "migration_console_workers 0.0" in metrics
    assert 'migration_console_queued_runs{database="db_main"} 1.0' in metrics

    start_worker()
    assert settled(run.pk).state == "success"
    assert live_workers() == 1
    assert 'id="no-worker"' not in client.get("/admin/console/").content.decode()
    assert 'id="run-no-worker"' not in client.get(page).content.decode()
    metrics = client.get("/metrics").content.decode()
    assert "migration_console_workers 1.0" in metrics
    assert 'migration_console_queued_runs{database="db_main"} 0.0' in metrics


# --- make run --------------------------------------------------------------------------------
def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_make_run_serves_the_console_with_one_worker_and_ctrl_c_stops_both(cli_env, tmp_path):
    port = free_port()
    log = tmp_path / "devserver.log"
    env = {**cli_env, **WORKER_TEST_ENV, "DEVSERVER_ADDRESS": f"127.0.0.1:{port}"}
    devserver = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "devserver.py")],
        env={**env, "DJANGO_DEBUG": "1"},
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: port_open(port) and live_workers() == 1, 60, "console and worker")

        devserver.send_signal(signal.SIGINT)  # what the terminal's Ctrl-C sends

        assert devserver.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if devserver.poll() is None:
            devserver.kill()
    assert not port_open(port)
    wait_until(lambda: live_workers() == 0, 10, "the worker unregistered")
    assert "migration worker" in log.read_text() and "stopped" in log.read_text()


# --- a later attempt, a frozen worker, a cancel -----------------------------------------------
def test_a_resumed_run_refuses_a_file_that_appeared_after_its_first_attempt(target, start_worker):
    slow_files(target, 2, seconds=1.5)
    first = start_worker()[0]
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
    wait_until(lambda: runner_busy(target, run), 60, "file 1 running")
    first.send(signal.SIGKILL)
    target.write("003_late.sql", "CREATE TABLE late (id int);\n")  # nobody confirmed it
    start_worker()

    run = settled(run.pk, timeout=60)

    assert (run.state, run.attempts) == ("refused", 2), run.message
    assert "003 changed or appeared since its first attempt" in run.message
    assert not target.table_exists("late")
    # File 1 was rolled back with the killed session, or committed whole with its row.
    applied = sorted(v for v, row in target.tracking().items() if row[0] == "completed")
    assert (effects(target), applied) in (([], ["000"]), (["file 1"], ["000", "001"]))


def test_a_frozen_worker_whose_run_still_works_is_not_handed_over(target, start_worker):
    slow_files(target, 2, seconds=1)
    target.write(
        "001_slow1.sql", "INSERT INTO effects (what) VALUES ('file 1');\nSELECT pg_sleep(12);\n"
    )  # outlasts the 4 s stall and the recovery rounds
    frozen = start_worker()[0]
    run = run_start(target_name="db_main", caller=CONSOLE_ROOT, plan_hash=current_plan_hash())
    wait_until(lambda: runner_busy(target, run), 60, "file 1 running")
    frozen.send(signal.SIGSTOP)  # no heartbeat, while its session keeps applying file 1
    try:
        start_worker()
        time.sleep(7)  # the stall (4 s) is seen and the job checked every second meanwhile
        assert Run.objects.get(pk=run.pk).attempts == 1
    finally:
        frozen.send(signal.SIGCONT)

    run = settled(run.pk, timeout=60)

    assert (run.state, run.attempts) == ("success", 1), run.message
    assert effects(target) == ["file 1", "file 2"]


def test_a_run_a_worker_executes_is_cancelled_through_the_api(api, target, worker):
    target.write("001_sleep.sql", "SELECT pg_sleep(30);\nCREATE TABLE never (id int);\n")
    queued = api.post(wait=False).json()["run"]
    run = Run.objects.get(pk=queued)
    wait_until(lambda: runner_busy(target, run), 60, "the file running")

    response = api.post(f"runs/{queued}/cancel")

    assert response.status_code == 200, response.content
    run = Run.objects.get(pk=queued)
    assert (run.state, run.attempts) == ("cancelled", 1)
    assert not target.table_exists("never")
    detail = api.get(f"runs/{queued}").json()
    assert detail["state"] == "cancelled" and "cancelled by root" in detail["message"]


def test_a_queued_run_withdrawn_before_a_worker_lives_never_runs(api, target, start_worker):
    write_numbered(target, 1)
    queued = api.post(wait=False).json()["run"]

    assert api.post(f"runs/{queued}/cancel").status_code == 200
    start_worker()
    time.sleep(2)  # a worker would have picked the job up by now

    assert Run.objects.get(pk=queued).attempts == 0
    assert not target.table_exists("t1")
