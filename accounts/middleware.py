from auditlog.middleware import AuditlogMiddleware

from accounts.ip import client_ip


class AuditlogClientIPMiddleware(AuditlogMiddleware):
    """django-auditlog believes the first X-Forwarded-For entry; use our helper instead."""

    @staticmethod
    def _get_remote_addr(request):
        return client_ip(request) or None
