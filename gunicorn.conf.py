"""gunicorn settings for serving the console: `gunicorn -c gunicorn.conf.py`.

Command-line flags override these (e.g. `--bind 127.0.0.1:8080`). The app is
loaded once in the master (preload_app), so wsgi.py's start-up checks and the
SKIP_MIGRATIONS=false run happen once, before the workers fork. Logs are JSON
lines on stderr (errors) and stdout (access), like the console's own logs.
"""

import ipaddress
import os

wsgi_app = "migration_console.wsgi:application"
bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]  # containers listen on all
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads (gunicorn's gthread worker): POST /admin/migrations/run waits for its job up to
# MIGRATION_API_WAIT (300 s) in a thread, while the worker process keeps answering
# others and beating its heart; a sync worker would be killed after `timeout`.
threads = 8
preload_app = True
timeout = 60
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# X-Forwarded-Proto (and gunicorn's other secure-scheme headers) decides whether
# Django sees HTTPS. gunicorn believes it from loopback by default, so any local
# client could pass plain HTTP off as HTTPS; believe only the proxies the console
# itself trusts (CONSOLE_TRUSTED_PROXIES, same comma list), and nobody by default.
forwarded_allow_ips = ",".join(
    str(ipaddress.ip_network(entry.strip(), strict=False))  # as settings.py reads it
    for entry in os.environ.get("CONSOLE_TRUSTED_PROXIES", "").split(",")
    if entry.strip()
)
# Only the header the console's proxy is documented to set; a client's own
# X-Forwarded-Ssl passed through by a proxy is never a second opinion.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# gunicorn answers oversized requests itself, in HTML, before Django could answer
# JSON. Its largest finite request line (8190) fits any reasonable API query; the
# header limits leave room for big cookies and tokens. A front proxy should refuse
# anything larger first (see README, Deploying).
limit_request_line = 8190
limit_request_fields = 200
limit_request_field_size = 16384

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
