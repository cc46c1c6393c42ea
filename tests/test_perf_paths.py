"""The fast paths of issue 17 (start-up, apply, cold status, status API) give the
same answers as the slow ones they replace."""

import gzip
import json
import subprocess
import sys

import psycopg
import pytest
from django.core.cache import cache

from accounts.tokens import token_create
from migration_console.core.services import tracking
from migration_console.core.services.caller import Caller
from migration_console.core.services.directives import FileDirectives, parse_directives
from migration_console.core.services.runs import run_execute
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get
from tests.api_support import API, bearer
from tests.conftest import ROOT, write_numbered

CALLER = Caller(actor="tests", channel="cli")


def test_it_starts_migrate_sql_without_the_parser_or_the_job_machinery(cli_env):
    """procrastinate imports core/tasks.py in every process: the runner of jobs,
    approvals, fleets and pglast must wait until something needs them."""
    probe = (
        "import sys, django; django.setup();"
        "from django.core.management import load_command_class;"
        "load_command_class('migration_console.core', 'migrate_sql');"
        "heavy = ['pglast', 'migration_console.core.services.job_execute',"
        " 'migration_console.core.services.approvals', 'migration_console.core.services.fleet',"
        " 'migration_console.core.services.maintenance'];"
        "print(' '.join(name for name in heavy if name in sys.modules))"
    )
    env = {**cli_env, "DJANGO_SETTINGS_MODULE": "migration_console.settings"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"


def test_the_worker_tasks_still_reach_the_job_runner():
    from migration_console.core import tasks

    assert tasks.execute_run.name == "migration_console.execute_run"
    from migration_console.core.services.job_execute import run_job_execute  # noqa: F401


@pytest.mark.parametrize("schema", ["public", "We'ird \"schema"])
@pytest.mark.parametrize("applied_by", ["root", "o'brien", "ünï", "", "back\\slash", "nul\x00"])
@pytest.mark.parametrize("replaces_failure", [False, True])
def test_the_tracking_insert_is_what_psycopg_would_compose(
    target, schema, applied_by, replaces_failure, monkeypatch
):
    values = dict(
        version="007",
        name="add_it",
        checksum="ab" * 32,
        applied_by=applied_by,
        replaces_failure=replaces_failure,
    )
    with psycopg.connect(target.dsn) as conn:
        if "\x00" in applied_by:  # refused by psycopg, on the fast path too
            with pytest.raises(psycopg.DataError):
                tracking.completed_row_sql(conn, schema, **values)
            return
        fast = tracking.completed_row_sql(conn, schema, **values)
        monkeypatch.setattr(tracking, "_completed_row_fast", lambda *a, **k: None)
        slow = tracking.completed_row_sql(conn, schema, **values)
    assert fast == slow


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("CREATE TABLE t (id int);\n", FileDirectives()),
        ("-- a comment about migrate:things\nSELECT 1;\n", FileDirectives()),
        ("-- migrate:things\nSELECT 1;\n", None),  # unknown: refused
        ("\n  \n-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n", True),
        ("\u2003-- migrate:lock-timeout 5s\nSELECT 1;\n", "5s"),
        ("SELECT 1;\n-- migrate:no-transaction\n", FileDirectives()),  # not leading: no directive
    ],
)
def test_directives_are_found_only_in_the_leading_comment_lines(sql, expected):
    from migration_console.core.services.errors import MigrationSetError

    if expected is None:
        with pytest.raises(MigrationSetError):
            parse_directives(sql, "001_x.sql")
        return
    found = parse_directives(sql, "001_x.sql")
    if expected is True:
        assert found.no_transaction
    elif isinstance(expected, str):
        assert found.lock_timeout == expected
    else:
        assert found == expected


@pytest.mark.django_db
def test_the_status_lists_share_items_and_keep_their_order(target):
    write_numbered(target, 3)
    run_execute(target_name="db_main", caller=CALLER)
    target.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")
    target.write("002_t2.sql", "CREATE TABLE t2 (id bigint);\n")  # drifted
    answer = target_status(target_get()).as_dict()
    items = answer["all_migrations"]
    assert [i["status"] for i in items] == ["completed", "drifted", "completed", "pending"]
    assert answer["pending_migrations"] == [items[3]]
    assert answer["applied_migrations"] == items[:3]
    assert (answer["pending_count"], answer["applied_count"], answer["total"]) == (1, 3, 4)


@pytest.fixture
def api_get(client, django_user_model):
    cache.clear()
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    raw = token_create(user=root, name="tests").raw

    def get(**headers):
        return client.get(API + "status", headers={**bearer(raw), **headers})

    yield get
    cache.clear()


@pytest.mark.django_db
def test_a_poller_with_the_etag_gets_304_until_something_changes(target, api_get):
    write_numbered(target, 2)
    first = api_get()
    assert first.status_code == 200
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = api_get(if_none_match=etag)
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert api_get(if_none_match=f'W/{etag}, "other"').status_code == 304
    assert api_get(if_none_match='"other"').status_code == 200
    run_execute(target_name="db_main", caller=CALLER)
    changed = api_get(if_none_match=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert json.loads(changed.content)["applied_count"] == 2


@pytest.mark.django_db
def test_gzip_is_sent_only_to_a_client_that_asks_and_holds_the_same_answer(target, api_get):
    write_numbered(target, 2)
    plain = api_get()
    assert not plain.has_header("Content-Encoding")
    assert "Accept-Encoding" in plain["Vary"] and "Authorization" in plain["Vary"]
    zipped = api_get(accept_encoding="br, gzip;q=0.8")
    assert zipped.status_code == 200
    assert zipped["Content-Encoding"] == "gzip"
    assert zipped["Content-Type"] == "application/json"
    assert gzip.decompress(zipped.content) == plain.content
    assert zipped["ETag"] == plain["ETag"]
    refused = api_get(accept_encoding="gzip;q=0, identity")
    assert not refused.has_header("Content-Encoding")
    assert refused.content == plain.content
