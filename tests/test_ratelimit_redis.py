"""The login limit is shared by every serving process through Redis (REDIS_URL).

A real ``redis-server`` and two gunicorn processes on loopback: attempts spread
over both processes count against one limit, whatever X-Forwarded-For says.
"""

import http.client
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
import redis

from migration_console.core.models import AuditEvent
from tests.test_console_support import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, redis.ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up within {timeout}s")
        time.sleep(0.1)


def request(port: int, method: str, path: str, body: str = "", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read().decode()
    finally:
        conn.close()


@pytest.fixture
def two_servers(cli_env, redis_url, tmp_path):
    env = dict(
        cli_env,
        REDIS_URL=redis_url,
        CONSOLE_LOGIN_RATE="4/h",
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY="test-only-secret",
        SKIP_MIGRATIONS="true",
    )
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "migration_console.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "1",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_until(
                lambda port=port: request(port, "GET", "/admin/login/")[0] == 200,
                30,
                f"gunicorn on {port}",
            )
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def test_the_login_limit_is_shared_by_two_processes(two_servers, redis_url):
    make_user("superuser", username="root")
    first, second = two_servers
    _, headers, page = request(first, "GET", "/admin/login/")
    cookie = next(v for k, v in headers if k.lower() == "set-cookie" and "csrftoken=" in v)
    csrf_cookie = cookie.split(";")[0]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": "root", "password": "wrong guess"}
    )

    codes = []
    for attempt in range(6):
        port = (first, second)[attempt % 2]
        status, _, _ = request(
            port,
            "POST",
            "/admin/login/",
            body,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": csrf_cookie,
                "X-Forwarded-For": f"10.0.0.{attempt}",
                "X-Real-IP": f"10.0.1.{attempt}",
            },
        )
        codes.append((port, status))

    # 4 attempts in all, not 4 per process; then both processes answer 429
    assert [status for _, status in codes] == [200, 200, 200, 200, 429, 429]
    assert {port for port, status in codes if status == 429} == {first, second}
    assert redis.Redis.from_url(redis_url).keys("*"), "the counter is not in Redis"
    limited = AuditEvent.objects.filter(action="login", outcome="rate_limited")
    assert limited.count() == 2
    assert set(limited.values_list("client_ip", flat=True)) == {"127.0.0.1"}
