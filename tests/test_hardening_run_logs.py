"""Run logs stay in a private directory: another local user who pre-plants the
shared log location (a symlinked directory, a directory of their own, symlinks in
place of ``run-<id>.log``) gets nothing touched outside that directory."""

import os
import stat
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from migration_console.core.models import Run
from migration_console.core.services import launch
from tests.test_console_support import (  # noqa: F401 - fixtures
    _fresh_rate_limits,
    console_env,
    current_plan_hash,
    make_user,
    run_id_from,
    wait_for_run,
)

LOG_DIR = "migration-console-runs"  # under $TMPDIR unless CONSOLE_RUN_LOG_DIR is set
SECRET = b"root-only secret\n"
NOBODY = 65534


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch, settings):
    """A stand-in for /tmp (the default log location's parent), world-writable and
    sticky like it, and no remembered fallback directory."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr("tempfile.tempdir", str(shared))
    monkeypatch.setattr(launch, "_fallback_dir", None)
    settings.CONSOLE_RUN_LOG_DIR = None
    return shared


@pytest.fixture
def protected(tmp_path) -> Path:
    """A file the console must never write: 0600, as a root-owned secret would be."""
    path = tmp_path / "protected" / "shadow"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def assert_untouched(protected: Path) -> None:
    assert protected.read_bytes() == SECRET
    assert stat.S_IMODE(protected.stat().st_mode) == 0o600


def assert_private(directory: Path) -> None:
    info = os.lstat(directory)
    assert stat.S_ISDIR(info.st_mode)
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) == 0o700


def write_log(directory: Path, name: str = "run-7.log") -> Path:
    path = directory / name
    with os.fdopen(launch.run_log_open(path), "wb") as log:
        log.write(b"runner output\n")
    return path


def test_it_creates_the_log_directory_0700_and_each_log_0600(shared_tmp):
    directory = launch.run_log_dir()

    log = write_log(directory)

    assert directory == shared_tmp / LOG_DIR
    assert_private(directory)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_symlinked_log_directory_is_not_followed(shared_tmp, protected):
    planted = shared_tmp / "attacker"
    planted.mkdir()
    (planted / "run-7.log").symlink_to(protected)
    (shared_tmp / LOG_DIR).symlink_to(planted)

    directory = launch.run_log_dir()
    write_log(directory)

    assert directory.resolve().parent == shared_tmp.resolve()
    assert directory != shared_tmp / LOG_DIR
    assert_private(directory)
    assert_untouched(protected)
    assert sorted(p.name for p in planted.iterdir()) == ["run-7.log"]


def test_a_directory_others_can_write_is_not_used(shared_tmp, protected):
    planted = shared_tmp / LOG_DIR
    planted.mkdir()
    planted.chmod(0o777)
    (planted / "run-7.log").symlink_to(protected)

    directory = launch.run_log_dir()
    write_log(directory)

    assert directory != planted
    assert_private(directory)
    assert_untouched(protected)
    assert (planted / "run-7.log").is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another user")
def test_a_directory_owned_by_another_user_is_not_used(shared_tmp, protected):
    planted = shared_tmp / LOG_DIR
    planted.mkdir(mode=0o755)
    (planted / "run-7.log").symlink_to(protected)
    os.chown(planted / "run-7.log", NOBODY, NOBODY, follow_symlinks=False)
    os.chown(planted, NOBODY, NOBODY)

    directory = launch.run_log_dir()
    write_log(directory)

    assert directory != planted
    assert_private(directory)
    assert_untouched(protected)


def test_an_old_0755_directory_of_our_own_is_tightened_and_kept(shared_tmp):
    existing = shared_tmp / LOG_DIR
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)

    assert launch.run_log_dir() == existing
    assert_private(existing)


def test_a_symlink_in_place_of_a_log_is_replaced_not_followed(shared_tmp, protected):
    directory = launch.run_log_dir()
    (directory / "run-7.log").symlink_to(protected)
    stale = directory / "run-8.log"
    stale.write_bytes(b"a previous install's run 8\n")

    first = write_log(directory, "run-7.log")
    second = write_log(directory, "run-8.log")

    assert_untouched(protected)
    for log in (first, second):
        assert not log.is_symlink()
        assert log.read_bytes() == b"runner output\n"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


def _next_run_id() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
            " FROM core_run_id_seq"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("console_env")
def test_a_console_run_writes_nothing_outside_its_private_directory(
    target, shared_tmp, protected, settings
):
    settings.CONSOLE_RUN_LOG_DIR = None  # console_env points it at tmp_path
    target.write("001_first.sql", "CREATE TABLE first_table (id int);\n")
    planted = shared_tmp / "attacker"
    planted.mkdir()
    next_id = _next_run_id()
    for run_id in range(next_id, next_id + 5):
        (planted / f"run-{run_id}.log").symlink_to(protected)
    (shared_tmp / LOG_DIR).symlink_to(planted)
    client = Client()
    client.force_login(make_user("superuser"))

    response = client.post(
        "/admin/console/targets/db_main/run/",
        {"plan_hash": current_plan_hash(), "confirm_database": "db_main"},
    )

    run = wait_for_run(run_id_from(response))
    assert run.state == Run.State.SUCCESS, run.message
    assert_untouched(protected)
    assert all((planted / f"run-{i}.log").is_symlink() for i in range(next_id, next_id + 5))
    logs = [p for p in shared_tmp.glob(f"{LOG_DIR}-*/run-{run.pk}.log")]
    assert len(logs) == 1
    assert_private(logs[0].parent)
    assert stat.S_IMODE(logs[0].stat().st_mode) == 0o600
