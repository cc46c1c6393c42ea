"""gunicorn settings for serving the console: `gunicorn -c gunicorn.conf.py`.

Command-line flags override these (e.g. `--bind 127.0.0.1:8080`). The app is
loaded once in the master (preload_app), so wsgi.py's start-up checks and the
SKIP_MIGRATIONS=false run happen once, before the workers fork. Logs are JSON
lines on stderr (errors) and stdout (access), like the console's own logs.
"""

import os

wsgi_app = "migration_console.wsgi:application"
bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]  # containers listen on all
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 1
preload_app = True
timeout = 60
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Merged over gunicorn's defaults (a shallow update): keep its handler names.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "migration_console.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        },
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": "INFO", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}
