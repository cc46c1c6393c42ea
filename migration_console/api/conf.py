"""The API's settings, read in one place with their defaults."""

from django.conf import settings

PREFIX = "/admin/migrations/"
MAX_BODY_BYTES = 64 * 1024


def rate_read() -> str:
    """Reads (status, history, the OpenAPI document) per client IP."""
    return getattr(settings, "MIGRATION_API_RATE_READ", "120/m")


def rate_run() -> str:
    """Changes (run and its siblings) per client IP: much tighter than reads."""
    return getattr(settings, "MIGRATION_API_RATE_RUN", "6/m")


def is_api_path(path: str) -> bool:
    return path == PREFIX.rstrip("/") or path.startswith(PREFIX)
