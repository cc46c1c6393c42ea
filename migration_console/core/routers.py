"""Keep Django's own tables in the console database and off every target.

Targets are Django database aliases too (``db_main``, ...), so without this a
``migrate --database db_main`` would create the console's tables, or
procrastinate's job queue, inside a target.
"""

from django.conf import settings

CONSOLE_DATABASE = "default"
# procrastinate.contrib.django's app label: its jobs, workers and events tables.
JOB_QUEUE_APP = "procrastinate"


class TargetDatabaseRouter:
    def _is_target(self, alias: str) -> bool:
        return alias in settings.MIGRATION_TARGETS

    def db_for_read(self, model, **hints):
        return CONSOLE_DATABASE if model._meta.app_label == JOB_QUEUE_APP else None

    def db_for_write(self, model, **hints):
        return CONSOLE_DATABASE if model._meta.app_label == JOB_QUEUE_APP else None

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if self._is_target(db):
            return False
        if app_label == JOB_QUEUE_APP:
            return db == CONSOLE_DATABASE
        return None
