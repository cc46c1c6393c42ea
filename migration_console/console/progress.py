"""What the run page says beyond the raw run: one word per state, elapsed time,
the tab title, and after a failure what happened to the failed file and what to
do next. Shared by the page and its JSON (static/console/progress.js)."""

from django.urls import reverse
from django.utils import timezone

from migration_console.console.words import state_word
from migration_console.core.formatting import format_duration
from migration_console.core.models import Run
from migration_console.core.services.discovery import MigrationFile, discover_set
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.targets import target_get

FAILED_STATES = ("failed", "error", "locked", "refused", "cancelled")


def run_files(run: Run) -> dict[str, MigrationFile]:
    try:
        files = discover_set(target_get(run.target).path).files  # a read: never refused
    except MigrationConsoleError:
        return {}
    return {migration.version: migration for migration in files}


def _elapsed_seconds(run: Run) -> float | None:
    if not run.started_at:
        return None
    end = run.finished_at or timezone.now()
    return max((end - run.started_at).total_seconds(), 0.0)


def _failed_step(data: dict) -> dict | None:
    return next((row for row in data["rows"] if row["state"] == "failed"), None)


def next_steps(run: Run, data: dict, files: dict[str, MigrationFile]) -> dict | None:
    """After a failure: what became of the failed file, and the links to go on with."""
    if run.state not in FAILED_STATES:
        return None
    plan_url = reverse("console:target-plan", args=[run.target])
    status_url = reverse("console:target-status", args=[run.target])
    failed = _failed_step(data)
    applied = [row for row in data["rows"] if row["state"] == "completed"]
    kept = (
        f"{len(applied)} file{'s' if len(applied) != 1 else ''} before it stay applied. "
        if applied
        else ""
    )
    if failed is None:
        return {
            "text": f"The run ended {state_word(run.state)} before changing a file: "
            "see the message above, then look at the target's status.",
            "links": [("Status of " + run.target, status_url), ("Review the plan", plan_url)],
        }
    migration = files.get(failed["version"])
    if migration is not None and migration.no_transaction:
        return {
            "text": f"{failed['filename']} failed outside a transaction: the database may be "
            f"half-changed. {kept}Check it by hand, then repair the row before running again.",
            "links": [
                (
                    f"Repair {failed['version']}",
                    reverse("console:target-repair", args=[run.target])
                    + f"?version={failed['version']}",
                ),
                ("Status of " + run.target, status_url),
            ],
        }
    return {
        "text": f"{failed['filename']} failed and was rolled back: nothing of it remains "
        f"in the database. {kept}Fix the file, then review the plan and run again "
        "(the failed file is retried).",
        "links": [("Review the plan", plan_url), ("Status of " + run.target, status_url)],
    }


def progress_extras(run: Run, data: dict, files: dict[str, MigrationFile]) -> dict:
    state = data["state"]
    for row in data["rows"]:
        row["label"] = state_word(row["state"])
    elapsed = _elapsed_seconds(run)
    steps = next_steps(run, data, files)
    done = sum(1 for row in data["rows"] if row["state"] in ("completed", "failed"))
    return {
        "state_label": state_word(state),
        "title": f"{state_word(state)} · {run.action} #{run.pk} on {run.target}",
        "started_at_iso": run.started_at.isoformat() if run.started_at else None,
        "elapsed_seconds": elapsed,
        "elapsed": format_duration(int(elapsed * 1e9)) if elapsed is not None else "",
        "done_count": done,
        "next_steps": (
            {"text": steps["text"], "links": [{"label": a, "url": b} for a, b in steps["links"]]}
            if steps
            else None
        ),
        "lock_wait": data.get("lock_wait") or None,
        "blockers": data.get("blockers") or [],
    }
