"""Errors the service layer raises, each carrying its CLI exit code and HTTP status."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3


class MigrationConsoleError(Exception):
    exit_code = EXIT_FAILED
    http_status = 500
    error = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict:
        return {"error": self.error, "message": self.message}


class MigrationSetError(MigrationConsoleError):
    """The migration files are not a valid set; nothing was run."""

    exit_code = EXIT_BAD_INPUT
    error = "invalid migration files"

    def __init__(self, filename: str, reason: str):
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class UnknownTarget(MigrationConsoleError):
    exit_code = EXIT_BAD_INPUT
    http_status = 404
    error = "unknown database"


class TargetUnavailable(MigrationConsoleError):
    http_status = 503
    error = "database unavailable"


class RunRefused(MigrationConsoleError):
    """The run would be unsafe as things stand (drift, out-of-order, a failed
    no-transaction file, a changed plan); nothing was run."""

    exit_code = EXIT_BAD_INPUT
    http_status = 409
    error = "refused"

    def __init__(self, message: str, *, reason: str, versions: list[str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.versions = versions or []

    def as_dict(self) -> dict:
        return {
            "error": self.error,
            "reason": self.reason,
            "message": self.message,
            "versions": self.versions,
        }


class LockNotAcquired(MigrationConsoleError):
    exit_code = EXIT_LOCKED
    http_status = 409
    error = "locked"

    def __init__(self, message: str, *, holder: dict | None):
        super().__init__(message)
        self.holder = holder

    def as_dict(self) -> dict:
        return {"error": self.error, "message": self.message, "holder": self.holder}


class InvalidRequest(MigrationConsoleError):
    """Bad arguments to an action (an unknown version, nothing to repair); nothing
    was changed. Recorded as refused."""

    exit_code = EXIT_BAD_INPUT
    http_status = 400
    error = "bad request"

    def __init__(self, message: str):
        super().__init__(message)
        self.versions: list[str] = []


class ConfigurationError(MigrationConsoleError):
    """A setting the database rejects (e.g. MIGRATION_LOCK_TIMEOUT); nothing was run."""

    exit_code = EXIT_BAD_INPUT
    error = "misconfigured"
