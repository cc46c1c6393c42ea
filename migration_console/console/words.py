"""One vocabulary for every state chip of the console, pages and progress JSON alike.

The CLI's marks (``APPLIED``, ``PENDING``, ...) are the words; a run's own states
keep their names. ``templates/console/includes/state.html`` spells the same words
(tests/test_usability_words.py holds them together).
"""

from django.utils import timezone

STATE_WORDS = {
    "completed": "APPLIED",
    "out_of_order": "OUT-OF-ORDER",
    "not_run": "NOT RUN",
    "up_to_date": "UP TO DATE",
    "rate_limited": "RATE LIMITED",
    "awaiting_approval": "AWAITING APPROVAL",
}
# Everything the console shows a time for uses this one format (Django's ``date``
# filter spelling; templates use the same string).
DATE_FORMAT = "Y-m-d H:i:s T"
_STRFTIME = "%Y-%m-%d %H:%M:%S %Z"


def state_word(state: str) -> str:
    return STATE_WORDS.get(state, state.replace("_", " ").upper())


def when(moment) -> str | None:
    """A time as every console page shows it: ``2026-12-02 10:31:05 UTC``."""
    return timezone.localtime(moment).strftime(_STRFTIME) if moment else None
