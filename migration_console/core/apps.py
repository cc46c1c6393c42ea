import gc

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "migration_console.core"
    label = "core"
    verbose_name = "Migrations"

    def ready(self) -> None:
        # The last app to be ready: what start-up built (about half a million
        # objects: Django, psycopg, ninja...) lives as long as the process. Frozen, it
        # is left out of every later collection; a cold status of 10,000 files paid
        # ~0.08 s of passes over it. manage.py holds collection off until here.
        gc.freeze()
        gc.enable()
