"""Console settings with their defaults, read in one place."""

from django.conf import settings

DEFAULT_LOGIN_RATE = "5/m"
DEFAULT_RUN_RATE = "10/m"


def login_rate(group=None, request=None) -> str:
    """django-ratelimit rate for POSTs to the login form, per client IP."""
    return getattr(settings, "CONSOLE_LOGIN_RATE", None) or DEFAULT_LOGIN_RATE


def run_rate(group=None, request=None) -> str:
    """django-ratelimit rate for POSTs that change a target, per client IP."""
    return getattr(settings, "CONSOLE_RUN_RATE", None) or DEFAULT_RUN_RATE
