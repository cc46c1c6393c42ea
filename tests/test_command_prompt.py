"""The interactive prompt, answered on a real pseudo-terminal."""

import os
import pty
import re
import select
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def run_on_tty(env: dict, answer: bytes, *args: str) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:  # child: the command, with the pty as its terminal
        os.execve(sys.executable, [sys.executable, str(ROOT / "manage.py"), *args], env)
    output, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not answered and b"Continue? [y/N]" in output:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_answering_no_applies_nothing_and_exits_2(target, cli_env):
    target.write("001_a.sql", "CREATE TABLE a (id int);")
    code, out = run_on_tty(cli_env, b"n\n", "migrate_sql", "run")
    assert "1 pending. Continue? [y/N]" in out
    assert code == 2
    assert "aborted, nothing applied" in out
    assert not target.table_exists("a")


def test_answering_yes_applies_the_plan_that_was_shown(target, cli_env):
    target.write("001_a.sql", "CREATE TABLE a (id int);")
    target.write("002_b.sql", "CREATE TABLE b (id int);")
    code, out = run_on_tty(cli_env, b"y\n", "migrate_sql", "run")
    assert code == 0, out
    assert "\x1b[" in out  # colours, on a terminal only
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "[  PENDING   ] 001_a" in out
    assert "Applied 2 migration(s)" in out
    assert target.table_exists("a") and target.table_exists("b")
