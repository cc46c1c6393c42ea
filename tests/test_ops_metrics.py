"""/metrics: SPEC's four series, read from the databases at scrape time."""

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from migration_console.core.services.caller import Caller
from migration_console.core.services.locking import lock_acquire
from migration_console.core.services.runs import run_execute
from migration_console.core.services.targets import target_connect, target_get
from migration_console.ops.metrics import SERIES
from migration_console.targets import TargetConfig

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client, **extra) -> dict:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def values(families, name, **match) -> dict:
    """{label tuple (without the matched ones): value} of one series."""
    out = {}
    for sample in families[name].samples:
        if all(sample.labels.get(k) == v for k, v in match.items()):
            key = tuple(v for k, v in sorted(sample.labels.items()) if k not in match)
            out[key] = sample.value
    return out


def test_it_shows_the_four_series_before_and_after_a_run(make_target, client):
    main = make_target("db_main")
    other = make_target("db_other")
    main.write("001_a.sql", "CREATE TABLE a (id int);\n")
    main.write("002_b.sql", "SELECT pg_sleep(0.05); CREATE TABLE b (id int);\n")
    main.write("003_c.sql", "CREATE TABLE c (id int);\nINSERT INTO nope VALUES (1);\n")
    other.write("001_x.sql", "CREATE TABLE x (id int);\n")

    before = scrape(client)
    assert set(SERIES) <= set(before)
    assert values(before, "migration_console_pending_migrations") == {
        ("db_main",): 3.0,
        ("db_other",): 1.0,
    }
    assert values(before, "migration_console_migrations_total", database="db_main") == {
        ("completed",): 0.0,
        ("drifted",): 0.0,
        ("failed",): 0.0,
        ("missing",): 0.0,
        ("out_of_order",): 0.0,
        ("pending",): 3.0,
    }
    assert values(before, "migration_console_migration_duration_seconds") == {}
    assert values(before, "migration_console_lock_held") == {("db_main",): 0.0, ("db_other",): 0.0}

    outcome = run_execute(target_name="db_main", caller=Caller(actor="tester", channel="cli"))
    assert outcome.failure and outcome.failure.version == "003"

    after = scrape(client)
    assert values(after, "migration_console_pending_migrations") == {
        ("db_main",): 1.0,  # the failed transactional file is retried by the next run
        ("db_other",): 1.0,
    }
    totals = values(after, "migration_console_migrations_total", database="db_main")
    assert (totals[("completed",)], totals[("failed",)], totals[("pending",)]) == (2.0, 1.0, 0.0)
    durations = values(after, "migration_console_migration_duration_seconds", database="db_main")
    assert set(durations) == {("completed", "001"), ("completed", "002"), ("failed", "003")}
    recorded = dict(main.query("SELECT version, duration_ns FROM schema_migrations"))
    for (_, version), seconds in durations.items():
        assert seconds == pytest.approx(recorded[version] / 1e9)
    assert durations[("completed", "002")] >= 0.05


def test_lock_held_is_one_while_a_runner_holds_the_advisory_lock(target, client):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    with target_connect(target_get("db_main"), application_name="holder") as conn:
        lock_acquire(conn, "public", wait_seconds=1, database_label="db_main")
        held = scrape(client)
    assert values(held, "migration_console_lock_held") == {("db_main",): 1.0}
    assert values(scrape(client), "migration_console_lock_held") == {("db_main",): 0.0}


def test_an_unreachable_target_is_left_out_and_the_others_still_report(
    target, client, settings, tmp_path, caplog
):
    settings.MIGRATION_TARGETS = {
        **settings.MIGRATION_TARGETS,
        "db_gone": TargetConfig(
            name="db_gone",
            dsn=f"host={tmp_path} port=1 dbname=gone password=hunter2",
            schema="public",
            path=str(target.path),
        ),
    }
    families = scrape(client)
    assert values(families, "migration_console_pending_migrations") == {("db_main",): 0.0}
    assert "db_gone" in caplog.text
    assert "hunter2" not in caplog.text


def test_metrics_from_a_denied_ip_is_403(target, client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert b"migration_console" not in response.content


def test_an_allowed_network_other_than_loopback_may_scrape(target, client, settings):
    settings.CONSOLE_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics").status_code == 403  # 127.0.0.1 is no longer allowed


def test_a_forged_forwarded_for_does_not_open_metrics(target, client, settings):
    settings.CONSOLE_TRUSTED_PROXIES = []
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 403


def test_the_global_default_registry_is_never_touched(target, client):
    scrape(client)
    registered = {metric.name for metric in REGISTRY.collect()}
    assert not registered & {name.removesuffix("_total") for name in SERIES}
