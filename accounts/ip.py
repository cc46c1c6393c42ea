"""The one place that decides a request's client IP.

``REMOTE_ADDR`` unless the request came from a ``CONSOLE_TRUSTED_PROXIES``
address; then the right-most ``X-Forwarded-For`` entry that is not itself a
trusted proxy (a client can forge any entry left of the one our proxy added).
``X-Real-IP`` is never believed. The allowlist, django-ratelimit
(``RATELIMIT_IP_META_KEY``) and audit rows all use this.
"""

import ipaddress

from django.conf import settings


def _parse(value: str):
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _in_networks(address, networks: list[str]) -> bool:
    return any(address in ipaddress.ip_network(net) for net in networks)


def client_ip(request) -> str:
    remote = _parse(request.META.get("REMOTE_ADDR", ""))
    if remote is None:
        return ""
    trusted = settings.CONSOLE_TRUSTED_PROXIES
    if not trusted or not _in_networks(remote, trusted):
        return str(remote)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for entry in reversed([part for part in forwarded.split(",") if part.strip()]):
        address = _parse(entry)
        if address is None:
            return str(remote)
        if not _in_networks(address, trusted):
            return str(address)
    return str(remote)


def ip_allowed(ip: str) -> bool:
    address = _parse(ip) if ip else None
    return address is not None and _in_networks(address, settings.CONSOLE_ALLOWED_NETWORKS)
