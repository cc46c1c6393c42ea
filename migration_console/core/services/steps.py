"""What became of one file of a run."""

from dataclasses import dataclass

CANCELLED = "cancelled"
# A step the run could not start because it lost its session after the previous
# file committed; it changed nothing.
NOT_STARTED = "not_started"


@dataclass
class StepResult:
    version: str
    name: str
    status: str  # completed | failed
    duration_ns: int
    error: str | None = None
    attempts: int = 1  # more than 1 after lock-timeout retries

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "status": self.status,
            "duration": self.duration_ns,
            "error": self.error,
            "attempts": self.attempts,
        }
