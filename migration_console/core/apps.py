from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "migration_console.core"
    label = "core"
    verbose_name = "Migrations"
