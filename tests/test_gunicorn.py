"""gunicorn serves the console in production mode, the way the Docker image does:
the Dockerfile's collectstatic line, then its ENTRYPOINT and CMD, on loopback."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migration_console.core.models import Run
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
SECRET = "k7Vq2-production-like-secret-key-with-enough-entropy-9fX3LmZp0R"
VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            result = check()
            if result:
                return result
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what}: not ready within {timeout}s")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.stdout.read(), proc.stderr.read()


def shutil_which(name: str):
    import shutil

    return shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )


def stop_quietly(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> str:
    """The Dockerfile's own collectstatic line (it sets DJANGO_DEBUG/DJANGO_SECRET_KEY inline)."""
    root = tmp_path_factory.mktemp("static")
    line = re.search(r"^RUN (.*collectstatic.*)$", DOCKERFILE, re.M).group(1)
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}", DJANGO_STATIC_ROOT=str(root))
    env.pop("MIGRATION_TARGETS_FILE", None)
    result = subprocess.run(
        ["sh", "-c", line], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert (root / "staticfiles.json").is_file()
    return str(root)


@pytest.fixture
def production(cli_env, static_root) -> dict:
    env = dict(
        cli_env,
        PATH=f"{VENV_BIN}:{cli_env['PATH']}",
        DJANGO_SECRET_KEY=SECRET,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",  # loopback, no TLS
        DJANGO_STATIC_ROOT=static_root,
    )
    env.pop("DJANGO_DEBUG", None)  # default: off
    env.pop("REDIS_URL", None)
    return env


def serve(env: dict, port: int) -> subprocess.Popen:
    """ENTRYPOINT + CMD of the Dockerfile, bound to loopback."""
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])$", DOCKERFILE, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", DOCKERFILE, re.M).group(1))
    assert entrypoint == ["docker-entrypoint.sh"]
    argv = ["sh", str(ROOT / "deploy" / "docker-entrypoint.sh"), *cmd]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    return subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_gunicorn_serves_health_login_page_and_hashed_static_css(target, production, redis_url):
    target.write("001_boot.sql", "CREATE TABLE boot (id int);\n")
    env = dict(production, REDIS_URL=redis_url, SKIP_MIGRATIONS="false")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(env, port)
    try:
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 60, "gunicorn /healthz", proc)

        status, headers, body = get(f"{base}/admin/login/")
        assert status == 200
        assert headers["X-Frame-Options"] == "DENY"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert "Secure" in headers.get("Set-Cookie", "")
        css = re.findall(r'href="(/static/[^"]+\.css)"', body.decode())
        assert css, body[:500]
        for href in css:
            assert re.search(r"\.[0-9a-f]{12}\.css$", href), href  # manifest (hashed) name
            status, headers, _ = get(base + href)
            assert status == 200
            assert headers["Content-Type"].startswith("text/css")
            assert "immutable" in headers.get("Cache-Control", "")

        status, _, body = get(f"{base}/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready")

        # SKIP_MIGRATIONS=false: applied once, in the master, before the two workers forked.
        status, _, body = get(f"{base}/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        pending = families["migration_console_pending_migrations"].samples
        assert [(s.labels["database"], s.value) for s in pending] == [("db_main", 0.0)]
        assert target.table_exists("boot")
        assert [(r.channel, r.state) for r in Run.objects.all()] == [("startup", "success")]
    finally:
        _out, err = stop(proc)
    gunicorn_lines = [line for line in err.splitlines() if '"logger": "gunicorn.error"' in line]
    assert gunicorn_lines, err[-2000:]
    for line in gunicorn_lines:
        json.loads(line)  # JSON log lines


def test_gunicorn_refuses_to_serve_production_without_redis(target, production):
    port = free_port()
    proc = serve(production, port)
    try:
        proc.wait(60)
    finally:
        _out, err = stop(proc)
    assert proc.returncode != 0
    assert "REDIS_URL is required to serve the console" in err
