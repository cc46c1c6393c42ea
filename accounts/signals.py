"""A wrong password is an audit row (SPEC: Audit), whichever login form asked.

``user_login_failed`` fires whenever ``authenticate()`` finds no user for the
credentials it was given; Django has already replaced the password by stars.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from accounts.ip import client_ip
from migration_console.core.models import AuditEvent, Channel
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller

# Set on the request once its failed login has a row, so the login view does not
# write a second one.
LOGIN_FAILURE_AUDITED = "_migration_console_login_failure_audited"


@receiver(user_login_failed, dispatch_uid="accounts.audit_failed_login")
def audit_failed_login(sender, credentials, request=None, **kwargs) -> None:
    typed = credentials.get(get_user_model().USERNAME_FIELD) or "anonymous"
    audit_record(
        caller=Caller(
            actor=str(typed),
            channel=Channel.CONSOLE,
            client_ip=(client_ip(request) or None) if request is not None else None,
        ),
        action="login",
        outcome=AuditEvent.Outcome.DENIED,
        message="wrong user name or password (or an inactive account)",
    )
    if request is not None:
        setattr(request, LOGIN_FAILURE_AUDITED, True)
