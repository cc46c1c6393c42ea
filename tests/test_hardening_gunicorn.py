"""gunicorn with the project's own config (``gunicorn -c gunicorn.conf.py``) in
production mode, on loopback.

* Only a ``CONSOLE_TRUSTED_PROXIES`` address may say a request came over HTTPS
  (``X-Forwarded-Proto`` and gunicorn's other secure-scheme headers). The evidence
  is Django's own HTTPS redirect: a request Django sees as plain HTTP is sent to
  ``https://`` (301); one it sees as HTTPS reaches the API (401 JSON, no token).
* A long but reasonable API request (a 6 kB query, a big cookie, many headers) is
  answered by Django in JSON, not by gunicorn in HTML; beyond gunicorn's limits it
  still refuses (a front proxy's job, see README).
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_gunicorn import SECRET, free_port

pytestmark = pytest.mark.slow

STATUS = "/admin/migrations/status"
HTTPS = {"X-Forwarded-Proto": "https"}
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
SCHEME_HEADERS = [HTTPS, {"X-Forwarded-Ssl": "on"}, {"X-Forwarded-Protocol": "ssl"}]


class Server:
    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.log = log
        # A file, not a pipe: a pipe nobody drains fills up and blocks gunicorn's logging.
        with log.open("w") as stderr:
            self.proc = self._start(env, stderr)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited: {log.read_text()[-2000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "gunicorn did not come up within 60 s"
            time.sleep(0.1)

    def _start(self, env: dict, stderr) -> subprocess.Popen:
        return subprocess.Popen(
            [*GUNICORN, "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )

    def request(self, method: str, path: str, headers=None, source: str = "127.0.0.1"):
        """(status, headers, body) of one request sent from the ``source`` address."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(source, 0)
        )
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except TimeoutError:
            raise AssertionError(f"no answer; gunicorn's log:\n{self.log.read_text()[-3000:]}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session (start_new_session)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def serve(cli_env, redis_url, tmp_path):
    """Start gunicorn with the project's config and ``extra`` environment."""
    servers = []

    def start(**extra) -> Server:
        env = dict(
            cli_env,
            DJANGO_SECRET_KEY=SECRET,
            DJANGO_ALLOWED_HOSTS="127.0.0.1",
            REDIS_URL=redis_url,
            SKIP_MIGRATIONS="true",
        )
        for name in ("DJANGO_DEBUG", "CONSOLE_TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS"):
            env.pop(name, None)
        env.update(extra)
        servers.append(Server(env, tmp_path / f"gunicorn-{len(servers)}.log"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def assert_redirected_to_https(answer) -> None:
    status, headers, _ = answer
    assert status == 301, answer
    assert headers["Location"].startswith("https://"), headers


def assert_django_json(answer, status: int = 401) -> dict:
    code, headers, body = answer
    assert code == status, (code, body[:300])
    assert headers["Content-Type"] == "application/json", headers
    return json.loads(body)


# --- X-Forwarded-Proto ----------------------------------------------------------------------


def test_it_ignores_forwarded_https_from_loopback_when_no_proxy_is_trusted(serve):
    server = serve(DJANGO_SECURE_SSL_REDIRECT="true")

    assert_redirected_to_https(server.request("GET", STATUS))
    for claim in SCHEME_HEADERS:
        assert_redirected_to_https(server.request("GET", STATUS, claim))


def test_it_believes_forwarded_https_only_from_a_trusted_proxy(serve):
    server = serve(DJANGO_SECURE_SSL_REDIRECT="true", CONSOLE_TRUSTED_PROXIES="127.0.0.1/32")

    assert_django_json(server.request("GET", STATUS, HTTPS))
    assert_redirected_to_https(server.request("GET", STATUS))
    assert_redirected_to_https(server.request("GET", STATUS, {"X-Forwarded-Ssl": "on"}))
    # a client beside the proxy, reaching gunicorn directly, is not the proxy
    assert_redirected_to_https(server.request("GET", STATUS, HTTPS, source="127.0.0.2"))


# --- request sizes -------------------------------------------------------------------------


def test_it_answers_long_but_reasonable_api_requests_in_json_from_django(serve):
    server = serve(DJANGO_SECURE_SSL_REDIRECT="false")

    six_kb = server.request("GET", f"{STATUS}?database=db_main&pad={'x' * 6000}")
    near_the_limit = server.request("GET", f"{STATUS}?pad={'x' * (8150 - len(STATUS))}")
    big_cookie = server.request("GET", STATUS, {"Cookie": "c=" + "y" * 12000})
    many_headers = server.request("GET", STATUS, {f"X-Extra-{n}": "z" for n in range(150)})

    for answer in (six_kb, near_the_limit, big_cookie, many_headers):
        assert assert_django_json(answer)["error"] == "unauthorized"


def test_it_still_refuses_what_is_beyond_its_limits(serve):
    server = serve(DJANGO_SECURE_SSL_REDIRECT="false")

    assert server.request("GET", f"{STATUS}?pad={'x' * 20000}")[0] == 414
    assert server.request("GET", STATUS, {"Cookie": "c=" + "y" * 40000})[0] == 431
    assert server.request("GET", STATUS, {f"X-Extra-{n}": "z" for n in range(300)})[0] == 431
