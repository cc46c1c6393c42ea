"""Keep Django's own tables in the console database and off every target."""

from django.conf import settings


class TargetDatabaseRouter:
    def _is_target(self, alias: str) -> bool:
        return alias in settings.MIGRATION_TARGETS

    def db_for_read(self, model, **hints):
        return None

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if self._is_target(db):
            return False
        return None
