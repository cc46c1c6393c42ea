"""``/readyz`` probes at most once per 10 s per process and answers from that result,
so anonymous traffic never multiplies database logins (SPEC: Operations).

The broken target is a loopback socket that counts the connections it accepts and
closes each at once: every probe of it is exactly one accept.
"""

import contextlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from migration_console.ops import health
from migration_console.targets import TargetConfig

pytestmark = pytest.mark.django_db(transaction=True)


class CountingListener:
    """A TCP port that accepts and hangs up: a database that refuses every login."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            conn.close()

    def close(self):
        # close() alone leaves the thread blocked in accept(); shutdown() wakes it.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


@pytest.fixture(autouse=True)
def _no_remembered_probe():
    health.readyz_forget()
    yield
    health.readyz_forget()


@pytest.fixture
def broken_target(target, settings):
    listener = CountingListener()
    settings.MIGRATION_TARGETS = {
        **settings.MIGRATION_TARGETS,
        "db_broken": TargetConfig(
            name="db_broken",
            dsn=(
                f"host=127.0.0.1 port={listener.port} user=app password=hunter2 dbname=x"
                " sslmode=disable gssencmode=disable"
            ),
            schema="public",
            path=str(target.path),
        ),
    }
    yield listener
    listener.close()


def _get_readyz(_):
    response = Client().get("/readyz")
    return response.status_code, response.json()


def test_fifty_concurrent_requests_probe_the_broken_target_once(broken_target):
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(_get_readyz, range(50)))

    assert broken_target.accepted == 1
    assert {code for code, _ in answers} == {503}
    assert all(body["failing"] == ["db_broken"] for _, body in answers)
    assert all(body["checks"]["db_main"] == "ok" for _, body in answers)


def test_two_hundred_requests_open_at_most_a_handful_of_connections(broken_target):
    client = Client()

    codes = [client.get("/readyz").status_code for _ in range(200)]

    assert codes == [503] * 200
    assert broken_target.accepted <= 2


def test_it_probes_again_once_the_result_is_older_than_the_interval(broken_target, monkeypatch):
    monkeypatch.setattr(health, "PROBE_INTERVAL", 0.3)
    client = Client()

    client.get("/readyz")
    client.get("/readyz")
    first = broken_target.accepted
    threading.Event().wait(0.5)
    client.get("/readyz")

    assert first == 1
    assert broken_target.accepted == 2
