"""squawk findings in plan; --strict-lint refuses on error-level ones."""

import json

import pytest

from migration_console.core.services import lint
from migration_console.core.services.discovery import discover
from tests.conftest import migrate_sql

pytestmark = pytest.mark.django_db

REQUIRED_FIELD = "ALTER TABLE t1 ADD COLUMN must int NOT NULL;\n"


@pytest.fixture
def risky(target):
    target.write("001_t1.sql", "CREATE TABLE t1 (id bigint);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    target.write("002_required.sql", REQUIRED_FIELD)
    target.write("003_comment.sql", "COMMENT ON TABLE t1 IS 'fine';\n")
    return target


def test_plan_shows_squawks_finding_by_rule_name_beside_its_file(risky):
    code, out = migrate_sql("plan")
    assert code == 0  # findings never fail plan
    required = out.index("-- 002_required.sql")
    comment = out.index("-- 003_comment.sql")
    assert required < out.index("adding-required-field") < comment
    assert "adding-required-field" not in out[comment:]
    assert "lint: no findings" in out[comment:]


def test_plan_json_carries_the_findings_per_pending_item(risky):
    data = json.loads(migrate_sql("plan", "--json")[1])
    by_version = {item["version"]: item["lint"] for item in data["pending_migrations"]}
    rules = {f["rule"]: f for f in by_version["002"]["findings"]}
    assert rules["adding-required-field"]["level"] == "error"
    assert rules["adding-required-field"]["line"] == 1
    assert by_version["002"]["errors"] >= 1
    assert by_version["003"] == {"findings": [], "errors": 0, "unavailable": None}


def test_strict_lint_refuses_the_run_on_an_error_level_finding(risky):
    code, out = migrate_sql("run", "--yes", "--strict-lint")
    assert code == 2
    assert "002_required.sql: adding-required-field" in out
    assert set(risky.tracking()) == {"001"}


def test_without_strict_lint_the_run_applies_despite_findings(risky):
    risky.query("INSERT INTO t1 VALUES (1)")
    risky.write("002_required.sql", "ALTER TABLE t1 ADD COLUMN must int NOT NULL DEFAULT 0;\n")
    risky.write("004_drop.sql", "ALTER TABLE t1 DROP COLUMN must;\n")
    assert migrate_sql("run", "--yes")[0] == 0
    assert set(risky.tracking()) == {"001", "002", "003", "004"}


def test_strict_lint_passes_a_plan_with_only_warnings(target):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")  # prefer-bigint: a warning
    code, out = migrate_sql("run", "--yes", "--strict-lint")
    assert code == 0, out
    assert target.table_exists("t1")


def test_results_are_cached_by_checksum(risky, monkeypatch):
    files = discover(str(risky.path))
    first = lint.lint_files(files)
    monkeypatch.setattr(lint, "squawk_binary", lambda: None)
    assert lint.lint_files(files) == first
    risky.write("003_comment.sql", "COMMENT ON TABLE t1 IS 'changed';\n")
    again = lint.lint_files(discover(str(risky.path)))
    assert again["003"].unavailable == lint.NOT_INSTALLED
    assert again["002"] == first["002"]


def test_without_squawk_plan_says_so_and_strict_lint_refuses(target, monkeypatch):
    monkeypatch.setattr(lint, "squawk_binary", lambda: None)
    target.write("001_uncached_for_this_test.sql", "CREATE TABLE never_linted_before (id int);\n")
    code, out = migrate_sql("plan")
    assert code == 0 and "squawk not installed" in out
    code, out = migrate_sql("run", "--yes", "--strict-lint")
    assert code == 2 and "squawk not installed" in out
    assert not target.table_exists("never_linted_before")


def test_a_no_transaction_file_is_linted_as_running_outside_a_transaction(target):
    target.write("001_t1.sql", "CREATE TABLE t1 (id bigint);\n")
    target.write(
        "002_idx.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t1_idx ON t1 (id);\n",
    )
    target.write("003_idx.sql", "CREATE INDEX CONCURRENTLY IF NOT EXISTS t1_idx2 ON t1 (id);\n")
    results = lint.lint_files(discover(str(target.path)))
    assert results["002"].errors == []
    assert [f.rule for f in results["003"].errors] == [
        "ban-concurrent-index-creation-in-transaction"
    ]


def test_the_api_status_carries_the_findings_of_each_pending_item(risky, client, django_user_model):
    from django.core.cache import cache

    from accounts.tokens import token_create

    cache.clear()
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    response = client.get(
        "/admin/migrations/status",
        headers={"authorization": f"Bearer {token_create(user=root).raw}"},
    )
    cache.clear()
    assert response.status_code == 200, response.content
    data = response.json()
    pending = {item["version"]: item for item in data["pending_migrations"]}
    rules = [f["rule"] for f in pending["002"]["lint"]["findings"]]
    assert "adding-required-field" in rules
    assert pending["003"]["lint"]["findings"] == []
    applied = data["applied_migrations"][0]
    assert applied["version"] == "001" and "lint" not in applied


def test_the_console_plan_page_shows_the_finding_beside_its_file(risky, django_user_model):
    from django.core.cache import cache
    from django.test import Client

    cache.clear()
    client = Client()
    client.force_login(
        django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    )
    page = client.get("/admin/console/targets/db_main/plan/").content.decode()
    cache.clear()
    required = page.index('data-lint-for="002"')
    comment = page.index('data-lint-for="003"')
    finding = page.index('data-rule="adding-required-field"')
    assert required < finding < comment
    assert "squawk: no findings" in page[comment:]
