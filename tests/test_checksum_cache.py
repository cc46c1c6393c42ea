"""Checksums kept between processes: a cold status of a large directory reads no
file whose stat signature is unchanged, every change is still seen, and what runs
is always read whole and checked against the checksum it is recorded with."""

import datetime
import hashlib
import json
import os
import time

import pytest

from migration_console.core.services import checksum_cache, discovery
from migration_console.core.services.errors import MigrationSetError

COUNT = checksum_cache.MIN_FILES + 4


@pytest.fixture
def cache_dir(tmp_path, settings):
    settings.MIGRATION_CHECKSUM_CACHE_DIR = str(tmp_path / "cache")
    return tmp_path / "cache"


@pytest.fixture
def big(tmp_path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for i in range(1, COUNT + 1):
        (directory / f"{i:04d}_t_{i}.sql").write_text(f"CREATE TABLE t_{i} (id int);\n")
    (directory / "0003_t_3.sql").write_text(
        "-- migrate:lock-timeout 100ms\nCREATE TABLE t_3 (id int);\n"
    )
    return directory


@pytest.fixture
def reads(monkeypatch):
    """Counts the files read, and starts as a new process would: no cache in memory."""
    counted: list[str] = []
    original = discovery._read_bytes

    def counting(path, size):
        counted.append(os.path.basename(path))
        return original(path, size)

    monkeypatch.setattr(discovery, "_read_bytes", counting)
    new_process()
    return counted


@pytest.fixture
def trusted_at_once(monkeypatch):
    # Files written by the test are seconds old at most: the racy window is what
    # keeps them from being trusted; most tests close it.
    monkeypatch.setattr(checksum_cache, "RACY_NS", 0)


def new_process() -> None:
    discovery._cache.clear()
    discovery._listing_cache.clear()


def test_a_second_process_reads_no_unchanged_file(big, cache_dir, reads, trusted_at_once):
    first = discovery.discover_set(str(big))
    assert len(reads) == COUNT and not first.problems
    assert len(list(cache_dir.iterdir())) == 1
    reads.clear()
    new_process()
    second = discovery.discover_set(str(big))
    assert reads == []
    assert [(f.version, f.checksum, f.directives) for f in second.files] == [
        (f.version, f.checksum, f.directives) for f in first.files
    ]
    assert second.files[2].settings.lock_timeout == "100ms"
    # The text is read when asked for, and only then.
    assert second.files[0].sql == "CREATE TABLE t_1 (id int);\n"
    assert reads == ["0001_t_1.sql"]


def test_an_edit_of_the_same_size_with_its_mtime_restored_is_seen(
    big, cache_dir, reads, trusted_at_once
):
    discovery.discover_set(str(big))
    path = big / "0007_t_7.sql"
    before = path.stat()
    path.write_text("CREATE TABLE t_X (id int);\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    new_process()
    reads.clear()
    found = {f.version: f for f in discovery.discover_set(str(big)).files}
    assert reads == ["0007_t_7.sql"]
    assert found["0007"].sql == "CREATE TABLE t_X (id int);\n"
    assert found["0007"].checksum == hashlib.sha256(b"CREATE TABLE t_X (id int);\n").hexdigest()


def test_files_changed_just_before_the_scan_are_read_again_until_they_settle(
    big, cache_dir, reads, monkeypatch
):
    discovery.discover_set(str(big))  # every file was written just now: all racy
    new_process()
    reads.clear()
    discovery.discover_set(str(big))
    assert len(reads) == COUNT  # none trusted yet, and the cache is written again
    monkeypatch.setattr(checksum_cache, "RACY_NS", 0)
    new_process()
    reads.clear()
    discovery.discover_set(str(big))
    assert reads == []


def test_what_runs_is_read_whole_and_checked_against_its_checksum(
    big, cache_dir, reads, trusted_at_once
):
    discovery.discover_set(str(big))
    # A cache that lies (or a file changed between listing and reading): the checksum
    # says one thing, the file another. Status can only show what it was told, but a
    # run never executes text other than what it records.
    (cache_file,) = cache_dir.iterdir()
    data = json.loads(cache_file.read_text())
    data["files"]["0005_t_5.sql"][4] = "0" * 64
    cache_file.write_text(json.dumps(data))
    new_process()
    reads.clear()
    assert discovery.discover_set(str(big)).files[4].checksum == "0" * 64
    new_process()
    with pytest.raises(MigrationSetError) as refused:
        discovery.discover(str(big))
    assert refused.value.filename == "0005_t_5.sql"
    assert "changed while it was being read" in refused.value.reason
    # Nor other settings than the file's own: a lie about its directives is refused too.
    data["files"]["0005_t_5.sql"][4] = hashlib.sha256(b"CREATE TABLE t_5 (id int);\n").hexdigest()
    data["files"]["0005_t_5.sql"][5] = [False, "1h", None, None]
    cache_file.write_text(json.dumps(data))
    new_process()
    assert discovery.discover_set(str(big)).files[4].settings.lock_timeout == "1h"
    new_process()
    with pytest.raises(MigrationSetError, match="changed while it was being read"):
        discovery.discover(str(big))
    # Without the lie, discover reads every file it returns.
    cache_file.unlink()
    new_process()
    reads.clear()
    files = discovery.discover(str(big))
    assert len(reads) == COUNT and all(f.source is not None for f in files)


def test_a_cache_that_cannot_be_written_or_read_changes_nothing(big, tmp_path, settings, reads):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.MIGRATION_CHECKSUM_CACHE_DIR = str(blocker / "cache")
    assert len(discovery.discover_set(str(big)).files) == COUNT
    settings.MIGRATION_CHECKSUM_CACHE_DIR = str(tmp_path / "garbage")
    (tmp_path / "garbage").mkdir()
    path, _ = checksum_cache._cache_file(str(big))
    with open(path, "w") as handle:
        handle.write("{not json")
    new_process()
    assert len(discovery.discover_set(str(big)).files) == COUNT
    settings.MIGRATION_CHECKSUM_CACHE_DIR = ""
    new_process()
    assert len(discovery.discover_set(str(big)).files) == COUNT


def test_small_sets_and_bad_files_are_not_cached(tmp_path, cache_dir, reads, trusted_at_once):
    small = tmp_path / "small"
    small.mkdir()
    (small / "001_a.sql").write_text("SELECT 1;\n")
    discovery.discover_set(str(small))
    assert not cache_dir.exists()
    big = tmp_path / "big"
    big.mkdir()
    for i in range(1, COUNT + 1):
        (big / f"{i:04d}_t.sql").write_text(f"SELECT {i};\n")
    (big / "0009_t.sql").write_text("BEGIN;\nSELECT 9;\nCOMMIT;\n")
    assert [p.file for p in discovery.discover_set(str(big)).problems] == ["0009_t.sql"]
    new_process()
    reads.clear()
    assert [p.file for p in discovery.discover_set(str(big)).problems] == ["0009_t.sql"]
    assert reads == ["0009_t.sql"]  # the bad file is read (and refused) every time


def test_lint_findings_are_kept_between_processes_for_readers_only(
    tmp_path, cache_dir, monkeypatch
):
    from migration_console.core.services import lint

    directory = tmp_path / "lintable"
    directory.mkdir()
    (directory / "001_drop.sql").write_text("DROP TABLE users;\n")
    (directory / "002_fine.sql").write_text("SELECT 1;\n")
    files = discovery.discover(str(directory))
    first = lint.lint_files(files, stored=True)
    assert [f.rule for f in first["001"].findings] == ["ban-drop-table"]
    lint._cache.clear()  # a new process

    def no_squawk(binary, todo):
        raise AssertionError(f"squawk ran for {[m.filename for m in todo]}")

    monkeypatch.setattr(lint, "_squawk", no_squawk)
    again = lint.lint_files(files, stored=True)
    assert again["001"] == first["001"] and again["002"] == first["002"]
    lint._cache.clear()
    # The --strict-lint gate lints what it is about to run itself.
    with pytest.raises(AssertionError, match="squawk ran"):
        lint.lint_files(files)


def test_cache_files_unused_for_a_week_are_removed_when_another_is_written(
    big, cache_dir, trusted_at_once
):
    cache_dir.mkdir()
    stale = cache_dir / "checksums-0123.json"
    stale.write_text("{}")
    week_ago = time.time() - checksum_cache.UNUSED_FOR_SECONDS - 60
    os.utime(stale, (week_ago, week_ago))
    recent = cache_dir / "lint-4567.json"
    recent.write_text("{}")
    discovery.discover_set(str(big))
    assert not stale.exists() and recent.exists()
    assert len(list(cache_dir.glob("checksums-*.json"))) == 1


def test_json_output_is_the_same_json_with_one_line_per_list_item():
    from migration_console.core.formatting import readable_json

    data = {
        "database": "db_main",
        "all_migrations": [{"version": "001", "lint": {"findings": []}, "é": None}],
        "pending_migrations": [],
        "applied_at": datetime.datetime(2026, 12, 2, 21, 0, tzinfo=datetime.UTC),
        "nested": {"names": ["001", "002"], "empty": {}},
    }
    text = readable_json(data)
    assert json.loads(text) == json.loads(json.dumps(data, default=str))
    assert '    {"version": "001", "lint": {"findings": []}, "\\u00e9": null}' in text.splitlines()
    assert text.startswith('{\n  "database": "db_main",\n')
