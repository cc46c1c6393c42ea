import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "migration_console.settings")

application = get_wsgi_application()

# Serving starts here (gunicorn imports this once in its master, preload_app):
# refuse production without REDIS_URL, then apply migrations unless SKIP_MIGRATIONS.
from migration_console.ops.startup import serving_started  # noqa: E402

serving_started()
