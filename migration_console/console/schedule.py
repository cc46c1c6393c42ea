"""The plan page's "not before" field and what it says of the target's policy.

The field is a ``datetime-local`` in the browser's own time; the page's script adds
the browser's offset from UTC (``run_at_offset``, minutes as JavaScript counts them),
and without a script the time is read as UTC, as the label says.
"""

from datetime import UTC, datetime, timedelta

from migration_console.core.services.scheduling import next_opening, target_config

MAX_AHEAD = timedelta(days=366)


def schedule_context(target_name: str) -> dict:
    config = target_config(target_name)
    return {
        "approvals": config.approvals if config is not None else 0,
        "window": config.window if config is not None else "",
        "next_opening": next_opening(target_name) if config is not None and config.window else None,
    }


def posted_run_at(form) -> datetime | None:
    """The confirmed "not before" time (aware, UTC), None when left empty; ValueError
    with the words for the field when it cannot be read."""
    raw = (form.get("run_at") or "").strip()
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a date and time (YYYY-MM-DD HH:MM)") from None
    if local.tzinfo is None:
        offset = (form.get("run_at_offset") or "0").strip()
        if not offset.lstrip("-").isdigit() or abs(int(offset)) > 14 * 60:
            raise ValueError("the browser's time zone offset could not be read")
        # JavaScript's getTimezoneOffset(): minutes to add to local time to get UTC.
        local = (local + timedelta(minutes=int(offset))).replace(tzinfo=UTC)
    moment = local.astimezone(UTC)
    if moment > datetime.now(UTC) + MAX_AHEAD:
        raise ValueError("more than a year ahead")
    return moment
