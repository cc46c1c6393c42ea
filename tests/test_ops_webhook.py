"""MIGRATION_WEBHOOK_URL: a Slack-compatible POST after each run, to a loopback receiver."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from migration_console.core.models import Run
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import TargetUnavailable
from migration_console.core.services.maintenance import maintenance_execute
from migration_console.core.services.runs import run_execute
from migration_console.ops.webhook import redact
from migration_console.targets import TargetConfig

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver:
    """An HTTP server on 127.0.0.1:<free port> recording POSTed JSON bodies.

    mode: "ok" answers 200, "error" answers 500, "hang" never answers until closed.
    """

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.bodies: list[dict] = []
        self.received = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(
                    {
                        "content_type": self.headers.get("Content-Type"),
                        "json": json.loads(self.rfile.read(length)),
                    }
                )
                receiver.received.set()
                if receiver.mode == "hang":
                    receiver.release.wait(30)
                    return
                self.send_response(500 if receiver.mode == "error" else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def payloads(self) -> list[dict]:
        return [body["json"] for body in self.bodies]


@pytest.fixture
def receiver(settings):
    made = []

    def factory(mode: str = "ok") -> Receiver:
        hook = Receiver(mode)
        made.append(hook)
        settings.MIGRATION_WEBHOOK_URL = hook.url
        return hook

    yield factory
    for hook in made:
        hook.close()


def fields(payload: dict) -> dict:
    return {f["title"]: f["value"] for f in payload["attachments"][0]["fields"]}


def test_it_posts_a_slack_payload_after_a_successful_run(target, receiver):
    hook = receiver()
    target.write("001_users.sql", "CREATE TABLE users (id int);\n")
    target.write("002_orders.sql", "CREATE TABLE orders (id int);\n")
    run_execute(target_name="db_main", caller=Caller(actor="alice", channel="cli"))

    assert len(hook.bodies) == 1
    assert hook.bodies[0]["content_type"] == "application/json"
    payload = hook.payloads[0]
    assert "db_main" in payload["text"] and "succeeded" in payload["text"]
    assert payload["attachments"][0]["color"] == "good"
    assert fields(payload)["Outcome"] == "success"
    assert fields(payload)["Requested by"] == "alice"
    assert fields(payload)["Migrations"] == "001_users, 002_orders"
    event = payload["migration_console"]
    run = Run.objects.get()
    assert event["run_id"] == run.pk
    assert (event["database"], event["action"], event["channel"]) == ("db_main", "run", "cli")
    assert event["migrations"] == ["001_users", "002_orders"]
    assert event["duration_seconds"] >= 0
    body = json.dumps(payload)
    assert target.dsn not in body and target.dbname not in body


def test_it_posts_after_a_failed_run_with_the_database_error(target, receiver):
    hook = receiver()
    target.write("001_ok.sql", "CREATE TABLE ok (id int);\n")
    target.write("002_bad.sql", "INSERT INTO missing_table VALUES (1);\n")
    outcome = run_execute(target_name="db_main", caller=Caller(actor="bob", channel="api"))
    assert outcome.failure

    (payload,) = hook.payloads
    assert "FAILED" in payload["text"] and "002_bad" in payload["text"]
    assert payload["attachments"][0]["color"] == "danger"
    assert "missing_table" in fields(payload)["Error"]
    assert payload["migration_console"]["outcome"] == "failed"
    assert payload["migration_console"]["failed_version"] == "002"


def test_it_posts_after_a_rollback(target, receiver):
    hook = receiver()
    target.write("001_t.sql", "CREATE TABLE t (id int);\n")
    target.write("001_t.down.sql", "DROP TABLE t;\n")
    run_execute(target_name="db_main", caller=Caller(actor="alice", channel="cli"))
    maintenance_execute(
        action="rollback",
        target_name="db_main",
        version="001",
        caller=Caller(actor="alice", channel="cli"),
    )
    assert [p["migration_console"]["action"] for p in hook.payloads] == ["run", "rollback"]
    assert not target.table_exists("t")
    assert "rollback on *db_main*" in hook.payloads[1]["text"]


def test_an_unreachable_target_is_notified_without_its_password(
    target, receiver, settings, tmp_path
):
    hook = receiver()
    settings.MIGRATION_TARGETS = {
        "db_main": TargetConfig(
            name="db_main",
            dsn=f"postgres://app:hunter2@/gone?host={tmp_path}&port=1",
            schema="public",
            path=str(target.path),
        )
    }
    with pytest.raises(TargetUnavailable):
        run_execute(target_name="db_main", caller=Caller(actor="carol", channel="cli"))
    (payload,) = hook.payloads
    assert payload["migration_console"]["outcome"] == "error"
    assert "hunter2" not in json.dumps(payload)


def test_a_run_with_nothing_to_do_stays_quiet(target, receiver):
    hook = receiver()
    outcome = run_execute(target_name="db_main", caller=Caller(actor="cron", channel="cli"))
    assert outcome.status == "up_to_date"
    assert hook.bodies == []


def test_a_receiver_that_hangs_costs_the_run_at_most_the_timeout(
    target, receiver, settings, caplog
):
    settings.MIGRATION_WEBHOOK_TIMEOUT = 1.0
    hook = receiver("hang")
    target.write("001_t.sql", "CREATE TABLE t (id int);\n")
    started = time.monotonic()
    outcome = run_execute(target_name="db_main", caller=Caller(actor="alice", channel="cli"))
    elapsed = time.monotonic() - started
    assert outcome.status == "success"
    assert hook.received.is_set()  # it did try
    assert elapsed < 1.0 + 1.5, elapsed  # the run's own work is well under a second
    assert Run.objects.get().state == Run.State.SUCCESS
    assert "did not answer within 1.0s" in caplog.text
    assert "secret" not in caplog.text  # the webhook URL's path is a credential


def test_a_failing_receiver_is_logged_and_never_fails_the_run(target, receiver, caplog):
    receiver("error")
    target.write("001_t.sql", "CREATE TABLE t (id int);\n")
    outcome = run_execute(target_name="db_main", caller=Caller(actor="alice", channel="cli"))
    assert outcome.status == "success" and target.table_exists("t")
    assert "answered HTTP 500" in caplog.text


def test_a_receiver_that_is_down_is_logged_and_never_fails_the_run(target, settings, caplog):
    closed = Receiver()
    closed.close()  # nothing listens on that port any more
    settings.MIGRATION_WEBHOOK_URL = closed.url
    target.write("001_t.sql", "CREATE TABLE t (id int);\n")
    outcome = run_execute(target_name="db_main", caller=Caller(actor="alice", channel="cli"))
    assert outcome.status == "success"
    assert "webhook: POST to http://127.0.0.1" in caplog.text


def test_redact_hides_passwords_in_key_value_and_uri_dsns():
    text = "could not connect: password=hunter2 host=db; postgres://app:s3cret@db/x failed"
    cleaned = redact(text)
    assert "hunter2" not in cleaned and "s3cret" not in cleaned
    assert "password=***" in cleaned and "postgres://app:***@db/x" in cleaned
