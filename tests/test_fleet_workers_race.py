"""A group run through two workers settles: a member's job only becomes visible to the
other worker once the member's Run row is committed (found by bench/fleet.py)."""

import time

import pytest

from migration_console.core.models import Run
from migration_console.core.services.caller import Caller
from migration_console.core.services.fleet import group_run_start
from migration_console.target_groups import GroupConfig

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

QUERY = r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%' ORDER BY 1"


def test_it_settles_a_group_run_shared_by_two_idle_workers(
    target, settings, tmp_path, start_worker
):
    for i in range(1, 13):
        target.query(f"CREATE SCHEMA tenant_{i:02d}")
    path = tmp_path / "tenant_migrations"
    path.mkdir()
    (path / "001_items.sql").write_text("CREATE TABLE items (id int PRIMARY KEY);\n")
    group = GroupConfig(
        name="tenants", dsn=target.dsn, path=str(path), schemas_query=QUERY, targets=(), parallel=12
    )
    settings.MIGRATION_GROUPS = {"tenants": group}
    start_worker(2)

    parent = group_run_start(group=group, caller=Caller.cli())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parent.refresh_from_db()
        if parent.finished:
            break
        time.sleep(0.2)
    states = sorted(parent.members.values_list("state", flat=True))
    assert parent.state == Run.State.SUCCESS, (parent.state, states)
    assert states == ["success"] * 12
