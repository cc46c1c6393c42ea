"""When a run may start: its own ``run_at`` and its target's maintenance window.

The job of a scheduled run is deferred with procrastinate's ``schedule_at``; a run
whose job comes up outside the window (a worker that was down past its closing) is
deferred again to the next opening rather than started late.
"""

from datetime import datetime

from django.conf import settings
from django.utils import timezone

from migration_console.core.services.targets import MEMBER_SEPARATOR
from migration_console.core.services.windows import Window, parse_window
from migration_console.target_groups import GroupConfig
from migration_console.targets import TargetConfig


def target_config(target_name: str) -> TargetConfig | GroupConfig | None:
    """Whose approvals and window govern ``target_name``: the target's, a group's (for
    the group and each of its schema members)."""
    groups = getattr(settings, "MIGRATION_GROUPS", {})
    found = settings.MIGRATION_TARGETS.get(target_name) or groups.get(target_name)
    if found is None and MEMBER_SEPARATOR in target_name:
        found = groups.get(target_name.partition(MEMBER_SEPARATOR)[0])
    return found


def target_window(target_name: str) -> Window | None:
    config = target_config(target_name)
    return parse_window(config.window) if config is not None and config.window else None


def next_opening(target_name: str, now: datetime | None = None) -> datetime | None:
    """When the target's window next opens (now while it is open); None: no window."""
    window = target_window(target_name)
    return window.next_opening(now or timezone.now()) if window else None


def earliest_start(target_name: str, run_at: datetime | None) -> datetime | None:
    """When a run asked for ``run_at`` may start: None for right away, else the later
    of ``run_at`` and the next opening of the target's window at or after it."""
    now = timezone.now()
    start = run_at if run_at is not None and run_at > now else now
    window = target_window(target_name)
    if window is not None:
        start = window.next_opening(start)
    return start if start > now else None


def target_policy_needs_plan(target_name: str) -> bool:
    """Whether a run asked for on this target becomes a request, bound to its plan."""
    config = target_config(target_name)
    return config is not None and config.approvals > 0
