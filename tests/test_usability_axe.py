"""Every console page passes axe-core 4.14 (no serious or critical violation) in the
light and the dark theme, at 1280 and at 768 px wide, and no page is wider than a
768 px viewport. The pages carry the data that makes them hard: a failed file, a
squawk error, drift, a lock-free and an unreachable target, 20 targets."""

import pytest

from accounts.tokens import token_create
from tests.test_browser_console import browser  # noqa: F401 - fixture
from tests.test_console_groups import group_pages_data
from tests.test_console_support import _fresh_rate_limits, make_user  # noqa: F401 - fixtures
from tests.test_usability_support import (
    WIDTHS,
    add_target,
    axe_violations,
    drift,
    finished_run,
    page_width,
    signed_in_page,
    write_failing_plan,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONSOLE = "/admin/console/"
TARGET = CONSOLE + "targets/db_main/"
PAGES = {
    "overview": lambda data: CONSOLE,
    "overview-20-targets": lambda data: CONSOLE,
    "status": lambda data: TARGET,
    "plan": lambda data: TARGET + "plan/",
    "rollback-review": lambda data: TARGET + "rollback/?to=001",
    "baseline-review": lambda data: TARGET + "baseline/?to=003",
    "repair-review": lambda data: TARGET + "repair/?version=002",
    "progress-success": lambda data: f"{CONSOLE}runs/{data['success'].pk}/",
    "progress-failed": lambda data: f"{CONSOLE}runs/{data['failed'].pk}/",
    "history": lambda data: TARGET + "history/",
    "audit": lambda data: CONSOLE + "audit/",
    "tokens": lambda data: "/admin/accounts/apitoken/",
    "token-create": lambda data: "/admin/accounts/apitoken/add/",
    "login": lambda data: "/admin/login/",
    "overview-groups": lambda data: CONSOLE,
    "group": lambda data: CONSOLE + "groups/tenants/",
    "group-run-progress": lambda data: f"{CONSOLE}runs/{data['group_run'].pk}/",
}


@pytest.fixture
def console_data(target, tmp_path):
    root = make_user("superuser", username="root")
    write_failing_plan(target)
    drift(target)
    token_create(user=root, name="ci deploys")
    return {
        "root": root,
        "success": finished_run("db_main", failed=False),
        "failed": finished_run("db_main", failed=True),
    }


def twenty_targets(target, tmp_path) -> None:
    """19 more targets (schemas of the same database, nothing applied yet) and one
    that refuses connections."""
    empty = tmp_path / "fleet"
    empty.mkdir()
    (empty / "001_first.sql").write_text("CREATE TABLE first (id int);\n")
    for index in range(1, 19):
        add_target(f"db_fleet_{index:02d}", target.dsn, empty, schema=f"fleet_{index}")
    add_target(
        "db_gone",
        "host=127.0.0.1 port=9 dbname=gone user=gone connect_timeout=2",
        empty,
    )


COMBINATIONS = [(theme, width) for theme in ("light", "dark") for width in (1280, 768)]


def _findings(page, name: str, theme: str, width: int) -> list[str]:
    """What is wrong with the page as drawn now: axe's serious and critical
    violations, and at 768 px a page wider than the viewport."""
    found = [
        f"{name} {theme} {width}px: {v['impact']} {v['id']}: {v['help']}\n    "
        + "\n    ".join(v["nodes"])
        for v in axe_violations(page)
    ]
    if width == 768 and page_width(page) > 768:
        found.append(f"{name} {theme} {width}px: {page_width(page)} px wide")
    return found


@pytest.mark.parametrize("name", list(PAGES))
def test_it_has_no_serious_axe_violation_in_either_theme_and_fits_768_px(
    name,
    browser,  # noqa: F811 - fixture
    live_server,
    console_data,
    target,
    tmp_path,
    settings,
):
    """One load per theme (the admin's dark theme follows prefers-color-scheme); the
    width changes in place; axe runs on each of the four."""
    if name == "overview-20-targets":
        twenty_targets(target, tmp_path)
    if "group" in name:
        console_data.update(group_pages_data(target, settings, tmp_path))
    if name == "login":
        page = browser.new_context(base_url=live_server.url).new_page()
    else:
        page = signed_in_page(browser, live_server, console_data["root"])
    try:
        response = page.goto(PAGES[name](console_data))
        assert response.status == 200, f"{name}: HTTP {response.status}"
        found = []
        for theme, width in COMBINATIONS:
            page.set_viewport_size({"width": width, "height": WIDTHS[width]})
            if page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches") != (
                theme == "dark"
            ):
                page.emulate_media(color_scheme=theme)
                page.reload()  # a fresh draw: no colour caught mid-transition
            found += _findings(page, name, theme, width)
        assert found == [], "\n".join(found)
    finally:
        page.context.close()
