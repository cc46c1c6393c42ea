from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and access"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model

        from accounts import signals  # noqa: F401 - connects the failed-login audit
        from accounts.models import ApiToken

        # Changes of users and tokens are recorded by django-auditlog (SPEC: Audit).
        # Secrets and per-request bookkeeping stay out of the log.
        auditlog.register(get_user_model(), exclude_fields=["password", "last_login"])
        auditlog.register(ApiToken, exclude_fields=["token_hash", "last_used_at"])
