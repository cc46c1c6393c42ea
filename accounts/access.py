"""Who may do what, from where: one set of rules for console views, API views and audit.

Every channel asks these functions and records the same denial reasons.
"""

from dataclasses import dataclass

from accounts.ip import ip_allowed

VIEW_PERMISSION = "core.view_run"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    status: int = 200

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def can_view(user) -> Decision:
    """Read status and history: superusers, and staff holding the view permission."""
    if not user or not user.is_authenticated or not user.is_active:
        return Decision(False, "not authenticated", 401)
    if user.is_superuser or (user.is_staff and user.has_perm(VIEW_PERMISSION)):
        return ALLOWED
    return Decision(False, "not allowed to view migrations", 403)


def can_run(user, ip: str) -> Decision:
    """Change a target (run, rollback, baseline, repair): an active superuser on an allowed IP."""
    if not user or not user.is_authenticated or not user.is_active:
        return Decision(False, "not authenticated", 401)
    if not user.is_superuser:
        return Decision(False, "only superusers may change databases", 403)
    if not ip_allowed(ip):
        return Decision(
            False, f"client IP {ip or 'unknown'} is not in CONSOLE_ALLOWED_NETWORKS", 403
        )
    return ALLOWED


def can_use_api(user, ip: str) -> Decision:
    """Any JSON API endpoint (SPEC: JSON API): an active superuser on an allowed IP."""
    if not user or not user.is_authenticated or not user.is_active:
        return Decision(False, "not authenticated", 401)
    if not user.is_superuser:
        return Decision(False, "only superusers may use the migrations API", 403)
    if not ip_allowed(ip):
        return Decision(
            False, f"client IP {ip or 'unknown'} is not in CONSOLE_ALLOWED_NETWORKS", 403
        )
    return ALLOWED


AUDIT_VIEW_PERMISSION = "core.view_auditevent"


def can_view_audit(user) -> Decision:
    """Read the audit review: superusers, and staff holding the audit view permission."""
    if not user or not user.is_authenticated or not user.is_active:
        return Decision(False, "not authenticated", 401)
    if user.is_superuser or (user.is_staff and user.has_perm(AUDIT_VIEW_PERMISSION)):
        return ALLOWED
    return Decision(False, "not allowed to read the audit log", 403)
