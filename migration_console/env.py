"""Small parsers for settings read from the environment.

Each raises ImproperlyConfigured naming the variable, so a typo stops start-up
with a message instead of running with a surprising default.
"""

import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_list(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ImproperlyConfigured(f"{name}={raw!r} must not be negative")
    return value


def env_int(name: str, default: int, *, maximum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or int(raw) > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number from 0 to {maximum}")
    return int(raw)


# PostgreSQL's units for time settings.
_DURATION = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>us|ms|s|min|h|d)?$")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(value: str, *, bare_unit: str = "ms") -> float | None:
    """Seconds in a PostgreSQL-style duration (``500ms``, ``15min``), else None; a bare
    number is in ``bare_unit`` (PostgreSQL's own settings: milliseconds)."""
    match = _DURATION.match(value.strip())
    if not match:
        return None
    return float(match["number"]) * _UNIT_SECONDS[match["unit"] or bare_unit]


def env_duration(name: str, default: str) -> float:
    """Seconds from ``60s``, ``2min``, ``500ms`` (a bare number is seconds)."""
    raw = os.environ.get(name, default)
    seconds = duration_seconds(raw, bare_unit="s")
    if seconds is None:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a duration (e.g. 60s, 2min, 500ms)")
    return seconds


def env_networks(name: str, default: str = "") -> list[str]:
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not an IP network") from None
    return networks
