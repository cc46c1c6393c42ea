"""Change management: two-person approval, stale plans, expiry, scheduled runs,
maintenance windows, break-glass CLI runs. Real worker processes execute the runs."""

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.tokens import token_create
from migration_console.core.models import Approval, AuditEvent, Run
from migration_console.core.services.approvals import request_decide, requests_expire
from migration_console.core.services.caller import Caller
from migration_console.core.services.control import run_cancel
from migration_console.core.services.errors import RunRefused
from migration_console.core.services.jobs import run_start, run_wait
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get
from migration_console.core.services.windows import WindowError, parse_window
from migration_console.targets import load_targets_file
from tests.api_support import API, assert_json_error, bearer
from tests.conftest import migrate_sql
from tests.test_console_support import make_user
from tests.test_ops_webhook import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def hook(settings):
    receiver = Receiver()
    settings.MIGRATION_WEBHOOK_URL = receiver.url
    yield receiver
    receiver.close()


def with_policy(settings, target, **policy) -> None:
    settings.MIGRATION_TARGETS = {target.name: replace(target.config(), **policy)}


def caller_for(user) -> Caller:
    return Caller(actor=user.username, channel="api", user=user, client_ip="127.0.0.1")


def request(target, user, **kwargs) -> Run:
    plan = target_status(target_get(target.name)).plan_hash
    return run_start(target_name=target.name, caller=caller_for(user), plan_hash=plan, **kwargs)


def events(hook) -> list[str]:
    return [p.get("migration_console", {}).get("event") for p in hook.payloads]


def test_a_request_needs_another_superuser_and_then_a_worker_runs_it(
    target, settings, start_worker, hook
):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=1)
    alice, bob = make_user("superuser", "alice"), make_user("superuser", "bob")
    start_worker()
    run = request(target, alice)
    assert (run.state, run.job_id, run.approvals_required) == ("awaiting_approval", None, 1)
    time.sleep(1)
    assert not target.table_exists("a")  # nothing runs before the approval

    with pytest.raises(RunRefused, match="your own request"):
        request_decide(run_id=run.pk, caller=caller_for(alice), approve=True)
    decided = request_decide(run_id=run.pk, caller=caller_for(bob), approve=True, comment="ok")
    assert decided.state in ("queued", "running", "success")
    assert run_wait(run_id=run.pk, timeout=60).state == "success"
    assert target.table_exists("a")
    assert list(Approval.objects.values_list("username", "decision")) == [("bob", "approve")]
    audit = list(AuditEvent.objects.filter(run=run).values_list("action", "outcome", "actor"))
    assert ("approve", "refused", "alice") in audit
    assert ("approve", "approved", "bob") in audit
    assert ("run", "success", "alice") in audit
    assert "approved" in events(hook)


def test_two_approvals_need_two_distinct_approvers_and_a_rejection_ends_it(target, settings):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=2)
    alice, bob, carol = (make_user("superuser", n) for n in ("alice", "bob", "carol"))
    run = request(target, alice)
    assert request_decide(run_id=run.pk, caller=caller_for(bob), approve=True).state == (
        "awaiting_approval"
    )
    with pytest.raises(RunRefused, match="already decided"):
        request_decide(run_id=run.pk, caller=caller_for(bob), approve=True)
    assert Run.objects.get(pk=run.pk).state == "awaiting_approval"  # bob alone is not enough
    done = request_decide(run_id=run.pk, caller=caller_for(carol), approve=True)
    assert done.state == "queued" and done.job_id

    second = request(target, alice)
    rejected = request_decide(
        run_id=second.pk, caller=caller_for(bob), approve=False, comment="not on a Friday"
    )
    assert rejected.state == "rejected" and "not on a Friday" in rejected.message
    with pytest.raises(RunRefused, match="not awaiting approval"):
        request_decide(run_id=second.pk, caller=caller_for(carol), approve=True)


def test_a_file_added_after_approval_makes_the_run_stale_and_nothing_runs(
    target, settings, start_worker, hook
):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=1)
    alice, bob = make_user("superuser", "alice"), make_user("superuser", "bob")
    run = request(target, alice)
    request_decide(run_id=run.pk, caller=caller_for(bob), approve=True)
    target.write("002_b.sql", "CREATE TABLE b (id int);\n")  # before any worker picked it up
    start_worker(MIGRATION_WEBHOOK_URL=hook.url)
    settled = run_wait(run_id=run.pk, timeout=60)
    assert settled.state == "stale", settled.message
    assert not target.table_exists("a") and not target.table_exists("b")
    assert AuditEvent.objects.filter(run=run, outcome="stale").exists()
    deadline = time.monotonic() + 5
    while "stale" not in events(hook) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stale" in events(hook)


def test_an_unapproved_request_expires_after_the_ttl(target, settings, hook):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=1)
    settings.MIGRATION_REQUEST_TTL = 1.0
    run = request(target, make_user("superuser", "alice"))
    assert requests_expire() == []
    time.sleep(1.2)
    assert requests_expire() == [run.pk]
    run.refresh_from_db()
    assert run.state == "expired" and run.finished_at
    assert AuditEvent.objects.get(run=run, action="expire").outcome == "expired"
    assert events(hook) == ["requested", "expired"]


def test_a_run_at_5s_ahead_waits_then_runs(target, start_worker):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    start_worker()
    at = datetime.now(UTC) + timedelta(seconds=5)
    run = request(target, make_user("superuser", "alice"), run_at=at)
    assert run.state == "scheduled" and run.run_at == at
    time.sleep(3)
    assert not target.table_exists("a")
    assert Run.objects.get(pk=run.pk).state == "scheduled"
    settled = run_wait(run_id=run.pk, timeout=60)
    assert settled.state == "success" and settled.started_at >= at
    assert target.table_exists("a")


def test_a_run_scheduled_for_later_does_not_hold_back_a_run_now(target, start_worker):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    start_worker()
    alice = make_user("superuser", "alice")
    later = request(target, alice, run_at=datetime.now(UTC) + timedelta(hours=1))
    now = request(target, alice)
    assert run_wait(run_id=now.pk, timeout=60).state == "success"
    assert Run.objects.get(pk=later.pk).state == "scheduled"


def test_a_window_that_opens_in_a_few_seconds_holds_the_run_until_then(
    target, settings, start_worker
):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    now = datetime.now(UTC)
    opens = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (opens - now).total_seconds() < 4:  # too close to a minute boundary for the test
        opens += timedelta(minutes=1)
    closes = opens + timedelta(minutes=30)
    window = f"daily {opens:%H:%M}-{closes:%H:%M} UTC"
    with_policy(settings, target, window=window)
    start_worker()
    run = request(target, make_user("superuser", "alice"))
    assert run.state == "scheduled" and run.run_at == opens
    settled = run_wait(run_id=run.pk, timeout=120)
    assert settled.state == "success", settled.message
    assert settled.started_at >= opens


def test_a_scheduled_run_or_a_request_is_withdrawn_by_cancel(target, settings):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    alice = make_user("superuser", "alice")
    later = request(target, alice, run_at=datetime.now(UTC) + timedelta(hours=1))
    assert run_cancel(run_id=later.pk, caller=caller_for(alice)).state == "cancelled"
    with_policy(settings, target, approvals=1)
    asked = request(target, alice)
    assert run_cancel(run_id=asked.pk, caller=caller_for(alice)).state == "cancelled"


def test_the_cli_refuses_a_policed_target_without_break_glass_and_runs_with_it(
    target, settings, hook
):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=2, window="sat 02:00-03:00 UTC")
    code, output = migrate_sql("run", "--yes")
    assert code == 2, output
    assert "requires 2 approval(s)" in output and "--break-glass" in output, output
    assert not target.table_exists("a")
    assert AuditEvent.objects.get(action="run").outcome == "refused"

    code, output = migrate_sql("run", "--yes", "--break-glass")
    assert code == 0, output
    assert "BREAK-GLASS" in output and target.table_exists("a")
    run = Run.objects.get(state="success")
    assert run.break_glass
    row = AuditEvent.objects.get(run=run)
    assert row.message.startswith("BREAK-GLASS") and row.outcome == "success"
    deadline = time.monotonic() + 5
    while not hook.payloads and time.monotonic() < deadline:
        time.sleep(0.05)
    payload = hook.payloads[-1]
    assert payload["migration_console"]["break_glass"] is True
    assert "BREAK-GLASS" in payload["text"]
    # Reading is never policed.
    assert migrate_sql("status")[0] == 0


def test_windows_read_days_times_zones_and_overnight_spans():
    window = parse_window("sat,sun 02:00-05:00 Europe/Berlin")
    saturday_3am_berlin = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert window.is_open(saturday_3am_berlin)
    friday = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert not window.is_open(friday)
    assert window.next_opening(friday) == datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    overnight = parse_window("daily 22:00-02:00 UTC")
    assert overnight.is_open(datetime(2026, 12, 2, 1, 30, tzinfo=UTC))
    assert not overnight.is_open(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    for bad, reason in (
        ("weekends 02:00-05:00 UTC", "unknown day"),
        ("sat 02:00-02:00 UTC", "same time"),
        ("sat 02:00-05:00 Mars/Olympus", "unknown time zone"),
        ("sat 2-5", "is not"),
    ):
        with pytest.raises(WindowError, match=reason):
            parse_window(bad)


def test_the_targets_file_refuses_a_bad_policy_naming_the_key(tmp_path):
    path = tmp_path / "targets.yaml"
    base = f"  dsn: host=/tmp dbname=x\n  path: {tmp_path}\n"
    for extra, message in (
        ("  approvals: two\n", "prod.approvals: expected a whole number"),
        ("  approvals: 11\n", "prod.approvals: must be from 0 to 10"),
        ("  window: 'fri 25:00-26:00 UTC'\n", "prod.window"),
    ):
        path.write_text("prod:\n" + base + extra)
        with pytest.raises(ImproperlyConfigured, match=message):
            load_targets_file(str(path))
    path.write_text("prod:\n" + base + "  approvals: 2\n  window: 'sat,sun 02:00-05:00 UTC'\n")
    config = load_targets_file(str(path))["prod"]
    assert (config.approvals, config.window) == (2, "sat,sun 02:00-05:00 UTC")


# --- the API -------------------------------------------------------------------------
def api_post(client, path: str, token: str, body: dict):
    return client.post(
        f"{API}{path}", json.dumps(body), content_type="application/json", headers=bearer(token)
    )


def test_the_api_requests_approves_and_refuses_self_approval(target, settings):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with_policy(settings, target, approvals=1)
    alice, bob = make_user("superuser", "alice"), make_user("superuser", "bob")
    alice_token, bob_token = token_create(user=alice).raw, token_create(user=bob).raw
    client = Client()
    answer = api_post(client, "run", alice_token, {"confirm": True})
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert (body["status"], body["approvals_required"]) == ("awaiting_approval", 1)
    run_id = body["run"]
    own = api_post(client, f"runs/{run_id}/approve", alice_token, {"confirm": True})
    assert_json_error(own, 409, "refused")
    assert own.json()["reason"] == "own_request"
    approved = api_post(
        client, f"runs/{run_id}/approve", bob_token, {"confirm": True, "comment": "looks fine"}
    )
    assert approved.status_code == 200, approved.content
    assert approved.json()["state"] == "queued"
    again = api_post(client, f"runs/{run_id}/reject", bob_token, {"confirm": True})
    assert_json_error(again, 409, "refused")
    assert_json_error(api_post(client, "runs/999999/approve", bob_token, {"confirm": True}), 404)
    assert_json_error(
        api_post(client, f"runs/{run_id}/approve", bob_token, {"confirm": True, "comment": 5}),
        400,
    )
    actions = set(AuditEvent.objects.filter(run_id=run_id).values_list("action", "outcome"))
    assert {("request", "requested"), ("approve", "refused"), ("approve", "approved")} <= actions


def test_the_api_schedules_a_run_at_and_refuses_a_bad_one(target):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    token = token_create(user=make_user("superuser", "alice")).raw
    client = Client()
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    answer = api_post(client, "run", token, {"confirm": True, "run_at": at.isoformat()})
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["status"] == "scheduled"
    assert datetime.fromisoformat(body["run_at"]) == at
    for bad in ("tomorrow", "2026-12-05T02:00:00", 1764900000):
        refused = api_post(client, "run", token, {"confirm": True, "run_at": bad})
        assert_json_error(refused, 400)
        assert "run_at" in refused.json()["message"]
