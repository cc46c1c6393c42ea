"""MIGRATION_TARGETS_FILE: several targets from one YAML file, and start-up refusing
a bad file with a message naming the key (and never a password)."""

import json
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client.parser import text_string_to_metric_families

from migration_console.core.services.targets import Target
from migration_console.targets import load_targets, load_targets_file
from tests.conftest import ROOT, run_manage

DEV_DSN = "host=/nonexistent dbname=dev"


def write_yaml(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "targets.yaml"
    file.write_text(textwrap.dedent(text))
    return file


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("DB_DSN", "DB_SCHEMA", "MIGRATIONS_PATH", "MIGRATION_TARGETS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def refusal(tmp_path, text: str) -> str:
    file = write_yaml(tmp_path, text)
    with pytest.raises(ImproperlyConfigured) as caught:
        load_targets_file(str(file))
    return str(caught.value)


# --- loading ------------------------------------------------------------------


def test_it_loads_two_targets_and_expands_variables_with_defaults(tmp_path, clean_env):
    (tmp_path / "main").mkdir()
    (tmp_path / "other").mkdir()
    clean_env.setenv("MAIN_DB_PASSWORD", "s3cret")
    clean_env.setenv("MIGRATIONS_ROOT", str(tmp_path))
    file = write_yaml(
        tmp_path,
        """\
        db_main:
          dsn: postgres://app:${MAIN_DB_PASSWORD}@db.internal:5432/app
          path: ${MIGRATIONS_ROOT}/main
        db_reports:
          dsn: ${REPORTS_DSN:host=db.internal port=5433 dbname=reports}
          schema: ${REPORTS_SCHEMA:reporting}
          path: ${MIGRATIONS_ROOT}/other
        """,
    )
    clean_env.setenv("MIGRATION_TARGETS_FILE", str(file))
    targets = load_targets(ROOT, DEV_DSN)
    assert list(targets) == ["db_main", "db_reports"]
    assert targets["db_main"].dsn == "postgres://app:s3cret@db.internal:5432/app"
    assert targets["db_main"].schema == "public"
    assert targets["db_main"].path == str(tmp_path / "main")
    # default = everything after the first colon, colons and spaces included
    assert targets["db_reports"].dsn == "host=db.internal port=5433 dbname=reports"
    assert targets["db_reports"].schema == "reporting"


def test_a_db_main_entry_replaces_the_one_built_from_db_dsn(tmp_path, clean_env):
    clean_env.setenv("DB_DSN", "host=from-env dbname=x")
    clean_env.setenv("MIGRATIONS_PATH", str(tmp_path))
    file = write_yaml(tmp_path, f"db_main:\n  dsn: host=from-file dbname=y\n  path: {tmp_path}\n")
    clean_env.setenv("MIGRATION_TARGETS_FILE", str(file))
    assert load_targets(ROOT, DEV_DSN)["db_main"].dsn == "host=from-file dbname=y"


def test_without_db_main_in_the_file_db_dsn_still_builds_it(tmp_path, clean_env):
    clean_env.setenv("DB_DSN", "host=from-env dbname=x")
    clean_env.setenv("DB_SCHEMA", "app")
    clean_env.setenv("MIGRATIONS_PATH", str(tmp_path))
    file = write_yaml(tmp_path, f"db_other:\n  dsn: host=h dbname=o\n  path: {tmp_path}\n")
    clean_env.setenv("MIGRATION_TARGETS_FILE", str(file))
    targets = load_targets(ROOT, DEV_DSN)
    assert sorted(targets) == ["db_main", "db_other"]
    assert (targets["db_main"].dsn, targets["db_main"].schema) == ("host=from-env dbname=x", "app")


# --- refusals name the key ------------------------------------------------------


def test_an_unknown_key_is_refused_naming_it(tmp_path):
    message = refusal(tmp_path, f"db_main:\n  dns: host=h dbname=x\n  path: {tmp_path}\n")
    assert "db_main.dns" in message and "unknown key" in message


def test_a_missing_dsn_is_refused_naming_it(tmp_path):
    message = refusal(tmp_path, f"db_reports:\n  schema: public\n  path: {tmp_path}\n")
    assert "db_reports.dsn" in message and "missing" in message


def test_an_empty_dsn_from_an_empty_default_is_refused(tmp_path):
    message = refusal(tmp_path, f"db_reports:\n  dsn: ${{NOT_SET_ANYWHERE:}}\n  path: {tmp_path}\n")
    assert "db_reports.dsn" in message


def test_a_duplicate_target_name_is_refused_naming_it(tmp_path):
    message = refusal(
        tmp_path,
        f"""\
        db_main:
          dsn: host=a dbname=a
          path: {tmp_path}
        db_main:
          dsn: host=b dbname=b
          path: {tmp_path}
        """,
    )
    assert "duplicate" in message and "'db_main'" in message and "line 4" in message


def test_an_unreadable_path_is_refused_naming_the_key(tmp_path):
    message = refusal(tmp_path, f"db_main:\n  dsn: host=h dbname=x\n  path: {tmp_path}/nope\n")
    assert "db_main.path" in message and f"{tmp_path}/nope" in message


def test_an_unset_variable_without_default_is_refused_naming_key_and_variable(tmp_path):
    message = refusal(tmp_path, f"db_main:\n  dsn: ${{NOT_SET_ANYWHERE}}\n  path: {tmp_path}\n")
    assert "db_main.dsn" in message and "NOT_SET_ANYWHERE" in message


def test_an_unparsable_dsn_is_refused_without_repeating_its_password(tmp_path):
    message = refusal(
        tmp_path, f"db_main:\n  dsn: 'host=h password=hunter2 =broken'\n  path: {tmp_path}\n"
    )
    assert "db_main.dsn" in message
    assert "hunter2" not in message


def test_a_file_that_is_not_a_mapping_of_targets_is_refused(tmp_path):
    assert "mapping" in refusal(tmp_path, "- db_main\n- db_other\n")
    assert "db_main" in refusal(tmp_path, "db_main: postgres://x\n")


def test_a_missing_file_is_refused_naming_the_setting(tmp_path, clean_env):
    clean_env.setenv("MIGRATION_TARGETS_FILE", str(tmp_path / "absent.yaml"))
    with pytest.raises(ImproperlyConfigured, match="MIGRATION_TARGETS_FILE"):
        load_targets(ROOT, DEV_DSN)


def test_a_bad_migrations_path_env_is_refused_naming_it(tmp_path, clean_env):
    clean_env.setenv("MIGRATIONS_PATH", str(tmp_path / "absent"))
    with pytest.raises(ImproperlyConfigured, match=r"^MIGRATIONS_PATH"):
        load_targets(ROOT, DEV_DSN)


def test_passwords_stay_out_of_reprs_and_display_dsns(tmp_path, clean_env):
    file = write_yaml(
        tmp_path, f"db_main:\n  dsn: postgres://app:hunter2@db:5432/app\n  path: {tmp_path}\n"
    )
    config = load_targets_file(str(file))["db_main"]
    assert "hunter2" not in repr(config)
    target = Target(name="db_main", dsn=config.dsn, schema="public", path=str(tmp_path))
    assert target.display_dsn == "host=db port=5432 dbname=app user=app"


def test_start_up_stops_on_a_bad_file_naming_the_key(tmp_path, cli_env):
    file = write_yaml(
        tmp_path,
        f"""\
        db_main:
          dsn: postgres://app:hunter2@127.0.0.1:1/app
          path: {tmp_path}
        db_other:
          dsn: host=h dbname=o
          shema: app
          path: {tmp_path}
        """,
    )
    result = run_manage(dict(cli_env, MIGRATION_TARGETS_FILE=str(file)), "migrate_sql", "status")
    assert result.returncode != 0
    assert "db_other.shema: unknown key" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


# --- two targets end to end -----------------------------------------------------


def test_status_run_and_metrics_cover_both_targets_of_a_yaml_file(
    target, make_target, cli_env, tmp_path, client, settings, monkeypatch
):
    main = target  # db_main, the one cli_env points at
    other = make_target("db_other", schema="app")
    main.write("001_users.sql", "CREATE TABLE users (id int);\n")
    main.write("002_orders.sql", "CREATE TABLE orders (id int);\n")
    other.write("001_reports.sql", "CREATE TABLE app.reports (id int);\n")
    file = write_yaml(
        tmp_path,
        f"""\
        db_main:
          dsn: ${{MAIN_DSN}}
          path: {main.path}
        db_other:
          dsn: ${{OTHER_DSN:{other.dsn}}}
          schema: ${{OTHER_SCHEMA:app}}
          path: {other.path}
        """,
    )
    env = dict(cli_env, MIGRATION_TARGETS_FILE=str(file), MAIN_DSN=main.dsn)
    env.pop("DB_DSN")
    env.pop("MIGRATIONS_PATH")

    before = {}
    for name in ("db_main", "db_other"):
        result = run_manage(env, "migrate_sql", "status", "--json", "--database", name)
        assert result.returncode == 0, result.stderr
        before[name] = json.loads(result.stdout)
    assert (before["db_main"]["database"], before["db_main"]["pending_count"]) == ("db_main", 2)
    assert (before["db_other"]["database"], before["db_other"]["pending_count"]) == ("db_other", 1)

    for name in ("db_main", "db_other"):
        result = run_manage(env, "migrate_sql", "run", "--yes", "--database", name)
        assert result.returncode == 0, result.stderr
    assert main.table_exists("public.orders") and not main.table_exists("app.reports")
    assert other.table_exists("app.reports") and not other.table_exists("public.orders")
    assert set(other.tracking()) == {"001"}

    # The console process reads the same file: metrics cover both targets.
    monkeypatch.setenv("MAIN_DSN", main.dsn)
    settings.MIGRATION_TARGETS = load_targets_file(str(file))
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    completed = {
        s.labels["database"]: s.value
        for s in families["migration_console_migrations_total"].samples
        if s.labels["status"] == "completed"
    }
    assert completed == {"db_main": 2.0, "db_other": 1.0}
    pending = {
        s.labels["database"]: s.value
        for s in families["migration_console_pending_migrations"].samples
    }
    assert pending == {"db_main": 0.0, "db_other": 0.0}
