"""With DJANGO_DEBUG off: `check --deploy` is clean, cookies are secure, HSTS, a CSP,
X-Frame-Options DENY, whitenoise's manifest storage and JSON log lines."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_manage

SECRET = "k7Vq2-production-like-secret-key-with-enough-entropy-9fX3LmZp0R"


def production_env(base: dict, **extra) -> dict:
    env = dict(base, DJANGO_DEBUG="false", DJANGO_SECRET_KEY=SECRET)
    for name in ("DJANGO_SECURE_SSL_REDIRECT", "REDIS_URL", "DJANGO_ALLOWED_HOSTS"):
        env.pop(name, None)
    env.update(extra)
    return env


def python(env: dict, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, DJANGO_SETTINGS_MODULE="migration_console.settings"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_reports_nothing_with_production_settings(target, cli_env):
    result = run_manage(production_env(cli_env), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_without_a_secret_key_production_refuses_to_start(target, cli_env):
    env = production_env(cli_env)
    env.pop("DJANGO_SECRET_KEY")
    result = run_manage(env, "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off" in result.stderr


def test_production_settings_harden_cookies_headers_and_static_files(target, cli_env):
    result = python(
        production_env(cli_env),
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'secure': [s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE], "
        "'ssl_redirect': s.SECURE_SSL_REDIRECT, 'hsts': s.SECURE_HSTS_SECONDS, "
        "'xfo': s.X_FRAME_OPTIONS, 'csp': s.CONTENT_SECURITY_POLICY, 'mw': s.MIDDLEWARE, "
        "'static': s.STORAGES['staticfiles']['BACKEND'], "
        "'log': s.LOGGING['handlers']['console']['formatter']}))",
    )
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout)
    assert conf["secure"] == [True, True]
    assert conf["ssl_redirect"] is True
    assert conf["hsts"] >= 31536000
    assert conf["xfo"] == "DENY"
    assert "default-src 'self'" in conf["csp"] and "script-src 'self'" in conf["csp"]
    assert "frame-ancestors 'none'" in conf["csp"]
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in conf["mw"]
    assert "migration_console.ops.middleware.ContentSecurityPolicyMiddleware" in conf["mw"]
    assert conf["static"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert conf["log"] == "json"


def test_production_logs_are_json_lines(target, cli_env):
    result = python(
        production_env(cli_env),
        "import django, logging; django.setup(); "
        "logging.getLogger('migration_console.ops').warning('hello %s', 'ops')",
    )
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["level"] == "WARNING"
    assert line["logger"] == "migration_console.ops"
    assert line["message"] == "hello ops"


@pytest.mark.django_db
def test_every_page_carries_csp_and_refuses_framing(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
