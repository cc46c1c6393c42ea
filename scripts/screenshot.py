#!/usr/bin/env python3
"""Refresh the README's console screenshots (docs/console*.png).

Runs the browser test of the plan -> confirm -> run flow on a throw-away
PostgreSQL cluster with CONSOLE_SCREENSHOT_DIR set; that test saves the plan
with its confirmation, the run's progress, the history and the status pages.
Needs /usr/bin/chromium.

    .venv/bin/python scripts/screenshot.py [DIR]     # default: docs/
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    directory = Path(argv[0] if argv else ROOT / "docs").resolve()
    env = dict(
        os.environ,
        CONSOLE_SCREENSHOT_DIR=str(directory),
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "screenshot-only-secret"),
    )
    command = [
        sys.executable,
        str(ROOT / "scripts" / "pgcluster.py"),
        "exec",
        "--",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_browser_console.py::test_a_superuser_plans_confirms_and_watches_a_run_complete",
        "tests/test_console_requests.py::test_request_then_approval_by_another_user_then_progress_to_success",
    ]
    code = subprocess.call(command, cwd=ROOT, env=env)
    if code == 0:
        for name in (
            "console.png",
            "console-plan.png",
            "console-progress.png",
            "console-history.png",
            "console-requests.png",
        ):
            print(f"wrote {directory / name} and its -dark twin")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
