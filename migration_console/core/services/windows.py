"""Maintenance windows: ``"<days> HH:MM-HH:MM <IANA zone>"`` (SPEC "Approvals,
schedules, maintenance windows"), e.g. ``"sat,sun 02:00-05:00 UTC"`` or
``"daily 22:00-02:00 Europe/Berlin"`` (an end before the start runs past midnight:
the window belongs to the day it opens).

A run that would start outside its target's window waits until the next opening; a
run already started is never cut by the window's end.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SHAPE = re.compile(
    r"^(?P<days>[a-z,]+)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\s+(?P<zone>\S+)$"
)


class WindowError(ValueError):
    """A window that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Window:
    text: str
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    zone: ZoneInfo

    @property
    def length(self) -> timedelta:
        start = timedelta(hours=self.start.hour, minutes=self.start.minute)
        end = timedelta(hours=self.end.hour, minutes=self.end.minute)
        return end - start if end > start else end - start + timedelta(days=1)

    def _openings_around(self, moment: datetime):
        """Openings (as aware datetimes) from the day before ``moment`` for 8 days."""
        local = moment.astimezone(self.zone).date()
        for offset in range(-1, 8):
            day = local + timedelta(days=offset)
            if day.weekday() in self.days:
                yield datetime.combine(day, self.start, tzinfo=self.zone)

    def is_open(self, moment: datetime) -> bool:
        return any(
            opening <= moment < opening + self.length for opening in self._openings_around(moment)
        )

    def next_opening(self, moment: datetime) -> datetime:
        """``moment`` itself while the window is open, else when it next opens (UTC)."""
        if self.is_open(moment):
            return moment.astimezone(UTC)
        return min(o for o in self._openings_around(moment) if o > moment).astimezone(UTC)


def parse_window(text: str) -> Window:
    match = _SHAPE.match(" ".join(str(text).split()).lower().replace(", ", ","))
    if not match:
        raise WindowError(
            f"{text!r} is not '<days> HH:MM-HH:MM <zone>' (e.g. 'sat,sun 02:00-05:00 UTC')"
        )
    names = match["days"].split(",")
    if names == ["daily"]:
        days = frozenset(range(7))
    else:
        unknown = [name for name in names if name not in DAYS]
        if unknown:
            raise WindowError(f"unknown day {unknown[0]!r}: use daily, or mon … sun")
        days = frozenset(DAYS.index(name) for name in names)
    try:
        start, end = (time.fromisoformat(match[key]) for key in ("start", "end"))
    except ValueError:
        raise WindowError(f"{match['start']}-{match['end']} is not HH:MM-HH:MM") from None
    if start == end:
        raise WindowError("the window opens and closes at the same time")
    zone_name = text.split()[-1]  # as written: IANA names are case-sensitive
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"unknown time zone {zone_name!r} (an IANA name, e.g. UTC)") from None
    return Window(text=str(text), days=days, start=start, end=end, zone=zone)
