"""What is wrong with a target and what to do next, for the banner at the top of
its pages, and which actions can succeed as things stand.

The runner decides (``runner.refuse_unsafe_run``); this only reads the same
status so that a page never offers a button whose answer is a refusal.
"""

from dataclasses import dataclass, field

from django.urls import reverse

from migration_console.core.models import Run
from migration_console.core.services.run_reaper import OPEN_STATES
from migration_console.core.services.status import (
    DRIFTED,
    FAILED,
    MISSING,
    OUT_OF_ORDER,
    TargetStatus,
)


@dataclass(frozen=True)
class Banner:
    key: str  # element id: banner-<key>
    level: str  # error | warning
    text: str
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, url)


@dataclass(frozen=True)
class Advice:
    banners: list[Banner]
    can_run: bool  # the runner would start, given the options the plan page requires
    needs_allow_drift: bool
    needs_allow_out_of_order: bool
    open_run: Run | None  # a queued or running run of ours on this target

    @property
    def run_button(self) -> bool:
        """The status page's Run: never while drift needs a repair first (the plan page
        still offers the run, with --allow-drift required)."""
        return self.can_run and not self.needs_allow_drift

    @property
    def first_line(self) -> str:
        return self.banners[0].text if self.banners else ""


def open_run_of(target_name: str) -> Run | None:
    """The oldest queued or running run of this console on the target."""
    return Run.objects.filter(target=target_name, state__in=OPEN_STATES).order_by("pk").first()


def _repair_url(name: str, version: str) -> str:
    return reverse("console:target-repair", args=[name]) + f"?version={version}"


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= 160 else line[:159] + "…"


def advise(status: TargetStatus, *, may_run: bool, with_open_run: bool = True) -> Advice:
    name = status.target.name
    plan_url = reverse("console:target-plan", args=[name])
    status_url = reverse("console:target-status", args=[name])
    banners: list[Banner] = []
    can_run = not status.problems
    open_run = open_run_of(name) if with_open_run else None
    if open_run is not None:
        banners.append(
            Banner(
                "open-run",
                "warning",
                f"{open_run.action.capitalize()} #{open_run.pk} in progress by "
                f"{open_run.requested_by} ({open_run.state}): wait for it to finish.",
                [("Follow it", reverse("console:run-progress", args=[open_run.pk]))],
            )
        )
        can_run = False
    for item in status.with_state(FAILED):
        filename = item.file.filename if item.file else f"{item.version}_{item.name}.sql"
        cause = _first_line(item.error)
        if item.no_transaction:
            can_run = False
            banners.append(
                Banner(
                    f"failed-{item.version}",
                    "error",
                    f"{filename} FAILED outside a transaction ({cause}): the database may be "
                    "half-changed. Check it by hand, then repair the row; nothing runs until then.",
                    [
                        (f"Repair {item.version}", _repair_url(name, item.version)),
                        ("See the error", f"{status_url}#row-{item.version}"),
                    ],
                )
            )
        else:
            banners.append(
                Banner(
                    f"failed-{item.version}",
                    "error",
                    f"{filename} FAILED ({cause}); it was rolled back. Fix the file and run "
                    "again (it is retried), or repair the row if you fixed it by hand.",
                    [
                        ("Review the plan", plan_url),
                        ("See the error", f"{status_url}#row-{item.version}"),
                        (f"Repair {item.version}", _repair_url(name, item.version)),
                    ],
                )
            )
    drifted = status.with_state(DRIFTED, MISSING)
    for item in drifted:
        if item.status == DRIFTED:
            text = (
                f"{item.file.filename} is DRIFTED: the file changed since it was applied. "
                "Runs are refused until you repair it (re-record its checksum once you have "
                "checked the change)."
            )
            links = [(f"Repair {item.version}", _repair_url(name, item.version))]
        else:
            text = (
                f"{item.version}_{item.name} is MISSING: applied here, but its file is gone. "
                "Runs are refused until the file is restored."
            )
            links = [("See the row", f"{status_url}#row-{item.version}")]
        banners.append(Banner(f"drift-{item.version}", "error", text, links))
    late = status.with_state(OUT_OF_ORDER)
    if late:
        names = ", ".join(item.file.filename for item in late)
        banners.append(
            Banner(
                "out-of-order",
                "warning",
                f"OUT-OF-ORDER: {names} pending, older than the newest applied migration. "
                "They run only when you tick “also run out-of-order migrations” on the plan.",
                [("Review the plan", plan_url)],
            )
        )
    if not may_run:
        can_run = False
    return Advice(
        banners=banners,
        can_run=can_run,
        needs_allow_drift=bool(drifted),
        needs_allow_out_of_order=bool(late),
        open_run=open_run,
    )
