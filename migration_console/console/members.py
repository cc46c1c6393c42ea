"""URLs of group members: a schema member is named ``<group>/<schema>``, and Django's
``<str:name>`` stops at the slash, so every ``targets/<name>/...`` page gets a twin
whose name is exactly two segments (same view, same URL name: ``reverse`` picks the
twin for a member's name, ``targets/tenants/tenant_01/plan/``).

The twins come after the originals: ``targets/db_main/plan/`` stays the plan of
``db_main``. A schema named after one of the pages' words (``plan``, ``history``...)
is therefore shadowed by its group's page of that name; such a member is still run
with its group.
"""

from django.urls import path, register_converter


class MemberConverter:
    regex = r"[^/]+/[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(MemberConverter, "member")

TARGET_ROUTE = "targets/<str:name>/"


def member_routes(patterns: list) -> list:
    """A ``<member:name>`` twin of every ``targets/<str:name>/...`` pattern."""
    twins = []
    for pattern in patterns:
        route = str(getattr(pattern.pattern, "_route", ""))
        if route.startswith(TARGET_ROUTE):
            twins.append(
                path(
                    route.replace("<str:name>", "<member:name>", 1),
                    pattern.callback,
                    pattern.default_args,
                    name=pattern.name,
                )
            )
    return twins
