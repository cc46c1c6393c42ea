"""Lock-timeout retries of a transactional file (GitLab's ``with_lock_retries``).

Each attempt runs with a short ``lock_timeout``, so a file waiting behind a long
transaction gives up before the queries queued behind it stall; it is rolled back
whole and tried again after a wait that doubles from 1 s up to
``MIGRATION_LOCK_RETRY_MAX_WAIT``, with jitter so that runners do not retry in step.
"""

import random
import time
from dataclasses import dataclass, field

from django.conf import settings

from migration_console.core.services.blockers import Blocker, describe_blockers
from migration_console.core.services.execute import ScriptFailed

LOCK_NOT_AVAILABLE = "55P03"
FIRST_WAIT_SECONDS = 1.0
STOP_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class LockWait:
    """A file waiting for a table lock: shown live by every channel."""

    version: str
    filename: str
    attempt: int  # the attempt that is waiting, or that just timed out
    attempts_allowed: int
    blockers: list[Blocker] = field(default_factory=list)
    next_attempt_in_seconds: float | None = None  # set between attempts
    # This attempt was not made: a blocker seen before was still in its transaction.
    passed_over: bool = False

    @property
    def message(self) -> str:
        who = describe_blockers(self.blockers) if self.blockers else "a session not seen yet"
        if self.next_attempt_in_seconds is None:
            return (
                f"{self.filename} waits for a lock (attempt {self.attempt} of "
                f"{self.attempts_allowed}), held by {who}"
            )
        if self.passed_over:
            return (
                f"{self.filename}: attempt {self.attempt} of {self.attempts_allowed} not made, "
                f"still blocked by {who}; next attempt in {self.next_attempt_in_seconds:.1f} s"
            )
        return (
            f"{self.filename}: lock timeout on attempt {self.attempt} of {self.attempts_allowed}, "
            f"blocked by {who}; rolled back, next attempt in {self.next_attempt_in_seconds:.1f} s"
        )

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "filename": self.filename,
            "attempt": self.attempt,
            "attempts_allowed": self.attempts_allowed,
            "next_attempt_in_seconds": (
                None
                if self.next_attempt_in_seconds is None
                else round(self.next_attempt_in_seconds, 1)
            ),
            "passed_over": self.passed_over,
            "message": self.message,
            "blockers": [blocker.as_dict() for blocker in self.blockers],
        }


def lock_timed_out(failure: ScriptFailed) -> bool:
    return getattr(failure.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE


def retry_wait(attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): 1, 2, 4, … capped, ±25 %."""
    cap = settings.MIGRATION_LOCK_RETRY_MAX_WAIT
    base = min(cap, FIRST_WAIT_SECONDS * 2 ** (attempt - 1))
    return min(cap, base * random.uniform(0.75, 1.25))  # noqa: S311 (jitter, not a secret)


def wait_unless_stopped(seconds: float, stop_requested, ready=lambda: False) -> str | None:
    """Sleep up to ``seconds``, asking ``stop_requested()`` often (a cancel ends the wait)
    and ``ready()`` (the blockers seen have let go: no reason to wait longer)."""
    deadline = time.monotonic() + seconds
    while True:
        reason = stop_requested()
        if reason:
            return reason
        left = deadline - time.monotonic()
        if left <= 0 or ready():
            return None
        time.sleep(min(STOP_CHECK_SECONDS, left))


def exhausted_message(
    failure: ScriptFailed, attempts: int, lock_timeout: str, blockers, passed_over: int = 0
) -> str:
    who = describe_blockers(blockers) if blockers else "a session that let go before it was seen"
    if attempts == 1:
        return f"{failure}\nlock_timeout {lock_timeout}, no retries; blocked by {who}"
    not_made = (
        f", {passed_over} of them not made while the blocker stayed in its transaction"
        if passed_over
        else ""
    )
    return (
        f"{failure}\nGave up after {attempts} attempts (lock_timeout {lock_timeout} each"
        f"{not_made}); blocked by {who}"
    )
