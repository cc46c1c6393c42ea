"""The run page of a group's parent run: each member's state and run, counts per
state, live (static/console/progress.js); and, on a member's run page, the way back
to its parent. Shared by the page and its JSON."""

from collections import Counter

from django.urls import reverse

from migration_console.console.words import state_word
from migration_console.core.models import Run
from migration_console.core.services.fleet import GROUP_KEY, MEMBERS_KEY, OK_STATES

# A member the parent has not started: waiting while the group runs, skipped after.
NOT_STARTED = "not_started"
SKIPPED = "skipped"


def _members(run: Run) -> list[dict]:
    started = {child.target: child for child in run.members.all()}
    rows = []
    for name in (run.arguments or {}).get(MEMBERS_KEY, []):
        child = started.get(name)
        waiting = SKIPPED if run.finished else NOT_STARTED
        state = child.state if child is not None else waiting
        rows.append(
            {
                "database": name,
                "state": state,
                "label": state_word(state),
                "run": child.pk if child is not None else None,
                "url": reverse("console:run-progress", args=[child.pk]) if child else None,
            }
        )
    return rows


def _next_steps(run: Run, members: list[dict], group_url: str) -> dict | None:
    bad = [m for m in members if m["state"] in Run.FINISHED_STATES and m["state"] not in OK_STATES]
    if not run.finished or run.state in OK_STATES or not bad:
        return None
    first = bad[0]
    skipped = sum(1 for m in members if m["state"] == SKIPPED)
    text = (
        f"{len(bad)} member{'s' if len(bad) != 1 else ''} did not succeed"
        + (f" and {skipped} {'was' if skipped == 1 else 'were'} not started" if skipped else "")
        + f": open {first['database']}'s run for its error, fix it, then review the "
        "group's plan and run it again (members already applied are up to date)."
    )
    links = [(f"Run of {first['database']}", first["url"])] if first["url"] else []
    links += [("Members needing attention", group_url + "?state=attention")]
    return {"text": text, "links": [{"label": a, "url": b} for a, b in links]}


def parent_progress(run: Run) -> dict:
    """What a group's parent run page adds to the run's data (its members replace
    the migrations list); a member's run page gets its parent. {} otherwise."""
    if run.parent_id:
        return {
            "parent": {
                "id": run.parent_id,
                "url": reverse("console:run-progress", args=[run.parent_id]),
                "group": run.parent.target,
                "group_url": reverse("console:group", args=[run.parent.target]),
            }
        }
    group_name = (run.arguments or {}).get(GROUP_KEY)
    if not group_name:
        return {}
    members = _members(run)
    counts = Counter(member["state"] for member in members)
    group_url = reverse("console:group", args=[group_name])
    done = sum(1 for member in members if member["state"] in Run.FINISHED_STATES)
    data = {
        "group": {"name": group_name, "url": group_url},
        "members": members,
        "member_counts": [
            {"state": state, "label": state_word(state), "count": n}
            for state, n in sorted(counts.items(), key=lambda item: -item[1])
        ],
        "members_done": done,
        "members_total": len(members),
        "rows": [],
        "done_count": done,
    }
    steps = _next_steps(run, members, group_url)
    data["next_steps"] = steps
    return data
