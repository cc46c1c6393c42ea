"""A throw-away redis-server on a free loopback port, for tests and benchmarks.

with temporary_redis(directory) as url:   # redis://127.0.0.1:<port>/0
    ...
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

from pgcluster import free_port


class RedisUnavailable(RuntimeError):
    pass


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def temporary_redis(directory: str | os.PathLike, timeout: float = 10.0) -> Iterator[str]:
    """Start redis-server (no persistence, working files in ``directory``), yield its URL,
    stop it on exit."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(server):
        raise RedisUnavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server did not come up on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
