"""/healthz (no database) and /readyz (console and every target reachable)."""

import json
import subprocess
import sys

import pytest

from migration_console.targets import TargetConfig
from tests.conftest import ROOT


def test_healthz_answers_without_touching_any_database(client):
    # No django_db mark: any query here would raise.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_probes_answer_whatever_the_host_header_and_without_https_redirect(client, settings):
    settings.ALLOWED_HOSTS = ["console.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    # Other pages still enforce both.
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_healthz_refuses_other_methods(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_when_console_and_targets_answer(make_target, client):
    make_target("db_main")
    make_target("db_other")
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"console": "ok", "db_main": "ok", "db_other": "ok"},
    }


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_naming_the_unreachable_target(target, client, settings, tmp_path, caplog):
    settings.MIGRATION_TARGETS = {
        **settings.MIGRATION_TARGETS,
        "db_gone": TargetConfig(
            name="db_gone",
            dsn=f"postgres://app:hunter2@/gone?host={tmp_path}&port=1",
            schema="public",
            path=str(target.path),
        ),
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["db_gone"]
    assert body["checks"] == {"console": "ok", "db_main": "ok", "db_gone": "unreachable"}
    assert "hunter2" not in response.content.decode()
    assert "db_gone" in caplog.text and "hunter2" not in caplog.text


READYZ_SCRIPT = """
import django, json
django.setup()
from django.test import Client
response = Client().get("/readyz")
print(json.dumps({"code": response.status_code, "body": response.json()}))
"""


def test_readyz_is_503_naming_the_console_database_when_it_is_down(target, cli_env):
    env = dict(
        cli_env,
        DATABASE_URL=cli_env["DATABASE_URL"].rsplit("/", 1)[0] + "/no_such_console_database",
        DJANGO_SETTINGS_MODULE="migration_console.settings",
    )
    result = subprocess.run(
        [sys.executable, "-c", READYZ_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["code"] == 503
    assert answer["body"]["failing"] == ["console"]
    assert answer["body"]["checks"] == {"console": "unreachable", "db_main": "ok"}
