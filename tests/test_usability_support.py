"""Fixtures and helpers of the usability tests (no tests here): a signed-in browser
page in a theme and at a width, axe-core injected through ``page.evaluate`` (the
CSP blocks script tags), the data a page needs to show what goes wrong, and a
target whose socket accepts connections and never answers."""

import contextlib
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from migration_console.core.models import Run
from migration_console.targets import TargetConfig
from tests.conftest import migrate_sql
from tests.test_browser_console import CHROMIUM, TIMEOUT_MS  # noqa: F401 - re-exported
from tests.test_console_support import make_user

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
WIDTHS = {1280: 900, 768: 1024}
BLOCKING_IMPACTS = ("serious", "critical")


def signed_in_page(browser, live_server, user, *, dark: bool = False, width: int = 1280):
    """A new browser context signed in as ``user`` (its session cookie, no login form)."""
    client = Client()
    client.force_login(user)
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": width, "height": WIDTHS.get(width, 900)},
        color_scheme="dark" if dark else "light",
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    return context.new_page()


def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it stands."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    return page.evaluate(
        """async (impacts) => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations
              .filter((v) => impacts.includes(v.impact))
              .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: "
                  + (n.failureSummary || "").split("\\n").slice(0, 3).join(" "))}));
        }""",
        list(BLOCKING_IMPACTS),
    )


def page_width(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth")


@contextlib.contextmanager
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never answers a byte:
    a PostgreSQL whose process hangs. Yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])  # held open, never read

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()


def add_target(name: str, dsn: str, path: Path, schema: str = "public") -> None:
    """Register one more target beside the test's own (settings are per test)."""
    targets = dict(settings.MIGRATION_TARGETS)
    targets[name] = TargetConfig(name=name, dsn=dsn, schema=schema, path=str(path))
    settings.MIGRATION_TARGETS = targets


# --- data: a target in every state an operator meets -------------------------------------
def write_failing_plan(target) -> None:
    """001 applied, 002 failed (rolled back), 003 pending with a squawk error."""
    target.write("001_accounts.sql", "CREATE TABLE accounts (id bigserial PRIMARY KEY);\n")
    target.write("001_accounts.down.sql", "DROP TABLE accounts;\n")
    target.write("002_broken.sql", "ALTER TABLE missing_table ADD COLUMN x int;\n")
    code, output = migrate_sql("run", "--yes")
    assert code == 1, output
    target.write(
        "003_required_email.sql",
        "ALTER TABLE accounts ADD COLUMN email text NOT NULL;\n",
    )


def drift(target, version: str = "001", name: str = "accounts") -> None:
    path = target.path / f"{version}_{name}.sql"
    path.write_text(path.read_text() + "-- changed after it ran\n")


def finished_run(target_name: str, *, failed: bool, user: str = "root") -> Run:
    """A finished run as a worker leaves it (no worker needed to draw its page)."""
    started = timezone.now() - timedelta(seconds=3)
    steps = [
        {"version": "001", "name": "accounts", "status": "completed", "duration": 12_000_000},
    ]
    if failed:
        steps.append(
            {
                "version": "002",
                "name": "broken",
                "status": "failed",
                "duration": 3_000_000,
                "error": 'relation "missing_table" does not exist',
            }
        )
    return Run.objects.create(
        target=target_name,
        action="run",
        channel="console",
        requested_by=user,
        planned=["001", "002", "003"] if failed else ["001"],
        steps=steps,
        state="failed" if failed else "success",
        message=(
            '002_broken.sql failed: relation "missing_table" does not exist'
            if failed
            else "applied 1 migration(s)"
        ),
        plan_hash="0" * 32,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        attempts=1,
    )


@pytest.fixture
def root_user():
    return make_user("superuser", username="root")
