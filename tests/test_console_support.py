"""Fixtures and helpers shared by the console, rate-limit and browser tests (no tests here).

The console queues runs as jobs for ``manage.py migration_worker`` processes, so
``console_env`` starts one against the test's console database and target.
"""

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache

from migration_console.core.models import Run
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get

PASSWORD = "correct horse battery staple 42"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def console_env(cli_env, start_worker, monkeypatch, settings):
    """A live worker for this test's databases; spawned processes inherit os.environ."""
    for key in ("DATABASE_URL", "DB_DSN", "MIGRATIONS_PATH", "MIGRATION_LOCK_WAIT"):
        monkeypatch.setenv(key, cli_env[key])
    monkeypatch.delenv("MIGRATION_TARGETS_FILE", raising=False)
    start_worker()
    return cli_env


def make_user(kind: str, username: str | None = None):
    """kind: superuser | staff_view | staff_no_perm | staff_audit."""
    User = get_user_model()
    username = username or kind
    if kind == "superuser":
        return User.objects.create_superuser(username, f"{username}@example.test", PASSWORD)
    user = User.objects.create_user(username, f"{username}@example.test", PASSWORD, is_staff=True)
    codename = {"staff_view": "view_run", "staff_audit": "view_auditevent"}.get(kind)
    if codename:
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="core")
        )
    return user


def current_plan_hash(name: str = "db_main") -> str:
    return target_status(target_get(name)).plan_hash


def wait_for_run(run_id: int, timeout: float = 30.0, poll: float = 0.1) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.finished:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run.state} after {timeout}s: {run.message}")
        time.sleep(poll)


def run_id_from(response) -> int:
    match = re.search(r"/admin/console/runs/(\d+)/", response["Location"])
    assert match, response["Location"]
    return int(match.group(1))
