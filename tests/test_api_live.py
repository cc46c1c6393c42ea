"""The JSON API over real HTTP: a dev server (runserver) on a free loopback port, the
seed guide's curl examples verbatim, two concurrent runs, and a schemathesis run."""

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from migration_console.core.models import AuditEvent, Run
from tests.conftest import ROOT, run_manage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, env: dict, log: Path, settings_module: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "test-only-secret"}
        if settings_module:
            env["DJANGO_SETTINGS_MODULE"] = settings_module
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "runserver",
                f"127.0.0.1:{self.port}",
                "--noreload",
                "--skip-checks",
            ],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dev server did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server_env(cli_env, django_user_model):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-admin-1")
    return cli_env


@pytest.fixture
def live(server_env, tmp_path, worker):
    server = LiveServer(server_env, tmp_path / "server.log")
    yield server
    server.stop()


@pytest.fixture
def token(server_env) -> str:
    """A real token, made by the real command."""
    result = run_manage(server_env, "create_api_token", "admin", "-v0")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# The seed guide's examples (lokstra-auth docs/MIGRATION_MANAGEMENT.md, Solution 2), verbatim.
SEED_STATUS = """curl -X GET http://localhost:8080/admin/migrations/status \\
  -H "Authorization: Bearer <super_admin_token>\""""
SEED_RUN = """curl -X POST http://localhost:8080/admin/migrations/run \\
  -H "Authorization: Bearer <super_admin_token>" \\
  -H "Content-Type: application/json" \\
  -d '{"confirm": true}'"""
SEED_HISTORY = """curl -X GET http://localhost:8080/admin/migrations/history \\
  -H "Authorization: Bearer <super_admin_token>\""""


def seed_curl(example: str, server: LiveServer, token: str) -> dict:
    """Run a seed example with only its host:port and token filled in."""
    command = example.replace("localhost:8080", f"localhost:{server.port}").replace(
        "<super_admin_token>", token
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_seed_guides_curl_examples_work_verbatim_against_a_dev_server(live, token, target):
    target.write("000_bootstrap.sql", "CREATE TABLE bootstrap (id int);\n")
    target.write("007_add_new_feature.sql", "CREATE TABLE feature (id int);\n")

    status = seed_curl(SEED_STATUS, live, token)
    assert (status["total"], status["pending_count"], status["applied_count"]) == (2, 2, 0)
    assert [m["version"] for m in status["pending_migrations"]] == ["000", "007"]

    run = seed_curl(SEED_RUN, live, token)
    assert run["status"] == "success" and run["applied_count"] == 2
    assert [m["name"] for m in run["applied_migrations"]] == ["bootstrap", "add_new_feature"]
    assert all(isinstance(m["duration"], int) for m in run["applied_migrations"])
    assert target.table_exists("feature")

    assert seed_curl(SEED_RUN, live, token) == {
        "status": "up_to_date",
        "message": "no pending migrations",
    }
    history = seed_curl(SEED_HISTORY, live, token)
    assert history["total"] == 2
    assert {m["version"] for m in history["migrations"]} == {"000", "007"}
    assert all(m["status"] == "completed" and m["duration"] > 0 for m in history["migrations"])

    status = seed_curl(SEED_STATUS, live, token)
    assert (status["pending_count"], status["applied_count"]) == (0, 2)


def test_the_dev_server_answers_json_errors_never_its_debug_pages(live, token, target):
    for path, method, code in (
        ("/admin/migrations/nope", "GET", 404),
        ("/admin/migrations/status/", "GET", 404),
        ("/admin/migrations/run", "GET", 405),
        ("/admin/migrations/status?database=nope", "GET", 404),
    ):
        request = urllib.request.Request(
            live.url + path, method=method, headers={"Authorization": f"Bearer {token}"}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == code
        assert answer.value.headers["Content-Type"] == "application/json"
        body = answer.value.read().decode()
        assert "Traceback" not in body and "<html" not in body.lower()
        assert json.loads(body)["error"]


def post_run(server: LiveServer, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + "/admin/migrations/run",
        data=b'{"confirm": true}',
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("lock_wait", ["10", "0.2"])
def test_two_concurrent_runs_apply_each_migration_once(
    server_env, token, target, tmp_path, lock_wait, start_worker
):
    start_worker(2, MIGRATION_LOCK_WAIT=lock_wait)
    target.query("CREATE TABLE side_effects (version int)")
    for i in (1, 2):
        target.write(
            f"00{i}_t{i}.sql",
            f"CREATE TABLE t{i} (id int);\nINSERT INTO side_effects VALUES ({i});\n"
            "SELECT pg_sleep(0.5);\n",
        )
    server = LiveServer({**server_env, "MIGRATION_LOCK_WAIT": lock_wait}, tmp_path / "s.log")
    try:
        start = threading.Barrier(2)
        answers: list[tuple[int, dict]] = []

        def call():
            start.wait()
            answers.append(post_run(server, token))

        threads = [threading.Thread(target=call) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    finally:
        server.stop()

    answers.sort(key=lambda answer: answer[1].get("status") != "success")
    (code1, first), (code2, second) = answers
    assert (code1, first["status"], first["applied_count"]) == (200, "success", 2), answers
    if code2 == 200:  # it waited for the lock, then found nothing pending
        assert second == {"status": "up_to_date", "message": "no pending migrations"}
    else:  # it gave up waiting for the lock
        assert (code2, second["error"]) == (409, "locked"), answers
        assert re.match(
            r"migration-console run#\d+ api admin", second["holder"]["application_name"]
        )
    assert sorted(r[0] for r in target.query("SELECT version FROM side_effects")) == [1, 2]
    assert sorted(Run.objects.values_list("state", flat=True)) == sorted(
        ["success", "up_to_date" if code2 == 200 else "locked"]
    )
    assert AuditEvent.objects.filter(channel="api", action="run").count() == 2


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    server_env, token, target, tmp_path, worker
):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    target.write("002_t2.sql", "CREATE TABLE t2 (id int);\n")
    server = LiveServer(server_env, tmp_path / "server.log", "tests.api_live_settings")
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{server.url}/admin/migrations/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,object_level_authorization",
                "--max-examples",
                "25",
                "--max-time",
                "20",
                "--workers",
                "1",
                "--seed",
                "4",
                "--request-timeout",
                "30",
                "--warnings",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    finally:
        server.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output, output[-3000:]
    # Every generated operation but the document's own (schemathesis leaves out the URL
    # it loaded the document from) was exercised with the superuser's token.
    from migration_console.api.service import openapi_document

    operations = sum(len(methods) for methods in openapi_document()["paths"].values())
    assert f"Tested: {operations - 1}" in output, output[-3000:]
    assert target.table_exists("t2"), "no generated run call was accepted"
