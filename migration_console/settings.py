"""Settings, read from the environment (see SPEC.md's Settings table).

Development defaults point at the throw-away cluster that `make run` keeps
under .devdb/; with DJANGO_DEBUG off the production rules apply.
"""

import os
import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from migration_console.env import (
    env_bool,
    env_duration,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_str,
)
from migration_console.target_groups import load_groups
from migration_console.targets import django_database, load_targets

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off")
    SECRET_KEY = secrets.token_urlsafe(50)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

# The local dev cluster started by `make run` (scripts/devdb.py).
DEV_SOCKET_DIR = BASE_DIR / ".devdb" / "run"
DEV_PORT = 54329
_DEV_HOST = str(DEV_SOCKET_DIR).replace("/", "%2F")
DEV_DATABASE_URL = f"postgres://postgres@{_DEV_HOST}:{DEV_PORT}/console"
DEV_TARGET_DSN = f"host={DEV_SOCKET_DIR} port={DEV_PORT} user=postgres dbname=db_main"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "auditlog",
    "procrastinate.contrib.django",
    "accounts",
    "migration_console.core",
]

MIDDLEWARE = [
    "migration_console.ops.middleware.ProbeMiddleware",  # /healthz /readyz /metrics
    "django.middleware.security.SecurityMiddleware",
    "migration_console.ops.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "migration_console.console.hostile.HostileInputMiddleware",  # NUL on admin pages: 400
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.AuditlogClientIPMiddleware",
]

ROOT_URLCONF = "migration_console.urls"
WSGI_APPLICATION = "migration_console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or DEV_DATABASE_URL, conn_max_age=60, conn_health_checks=True
    ),
}
# Recognisable in pg_stat_activity, like every target connection.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "application_name", "migration-console console-db"
)
# A console database that silently drops packets must not hang a connection attempt
# (runs retry their records for MIGRATION_RECORD_RETRY_SECONDS, which needs a bound).
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)

MIGRATION_TARGETS = load_targets(BASE_DIR, DEV_TARGET_DSN)
MIGRATION_GROUPS = load_groups(MIGRATION_TARGETS)  # fleets: the targets file's groups:
for _target in MIGRATION_TARGETS.values():
    DATABASES[_target.name] = django_database(_target)
DATABASE_ROUTERS = ["migration_console.core.routers.TargetDatabaseRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the console's own CSS/JS (no CDN)
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles"  # collectstatic target
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG  # development: files from the finders, no collectstatic

LOGIN_URL = "admin:login"

# --- Migration engine -------------------------------------------------------
MIGRATION_LOCK_WAIT = env_float("MIGRATION_LOCK_WAIT", 30.0)
# lock_timeout of each attempt of a migration; a transactional file that times out
# waiting for a table lock is rolled back and tried again (GitLab's with_lock_retries).
MIGRATION_LOCK_TIMEOUT = env_str("MIGRATION_LOCK_TIMEOUT", "1s")
MIGRATION_LOCK_RETRIES = env_int("MIGRATION_LOCK_RETRIES", 10, maximum=100)
MIGRATION_LOCK_RETRY_MAX_WAIT = env_duration("MIGRATION_LOCK_RETRY_MAX_WAIT", "60s")
# An unapproved run request ends "expired" after this long (checked every minute).
MIGRATION_REQUEST_TTL = env_duration("MIGRATION_REQUEST_TTL", "24h")
MIGRATION_BACKUP_DIR = env_str("MIGRATION_BACKUP_DIR")
# Checksums of directories of 256+ files, kept between calls (a cold status of 10,000
# files reads none of them again); "" turns it off (read-only file systems skip it).
MIGRATION_CHECKSUM_CACHE_DIR = env_str(
    "MIGRATION_CHECKSUM_CACHE_DIR",
    os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "migration-console",
    ),
)
# How long a run keeps retrying its Run and audit rows while the console DB is away.
MIGRATION_RECORD_RETRY_SECONDS = env_float("MIGRATION_RECORD_RETRY_SECONDS", 60.0)
MIGRATION_WEBHOOK_URL = env_str("MIGRATION_WEBHOOK_URL")
MIGRATION_WEBHOOK_TIMEOUT = 3.0  # seconds a run waits for the webhook receiver at most
SKIP_MIGRATIONS = env_bool("SKIP_MIGRATIONS", True)

# --- Runs are jobs (procrastinate), executed by `manage.py migration_worker` -----
PROCRASTINATE_DATABASE_ALIAS = "default"  # never a target, though targets are aliases too
# How long POST /admin/migrations/run waits for its job before answering 202.
MIGRATION_API_WAIT = env_float("MIGRATION_API_WAIT", 300.0)
# A worker records a heartbeat this often; one silent for MIGRATION_WORKER_STALLED_AFTER
# is dead, and its job is handed to another worker (checked every ..._RECOVERY_EVERY).
MIGRATION_WORKER_HEARTBEAT = env_float("MIGRATION_WORKER_HEARTBEAT", 5.0)
MIGRATION_WORKER_STALLED_AFTER = env_float("MIGRATION_WORKER_STALLED_AFTER", 30.0)
MIGRATION_WORKER_RECOVERY_EVERY = env_float("MIGRATION_WORKER_RECOVERY_EVERY", 10.0)

# --- Access -----------------------------------------------------------------
CONSOLE_ALLOWED_NETWORKS = env_networks("CONSOLE_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128")
CONSOLE_TRUSTED_PROXIES = env_networks("CONSOLE_TRUSTED_PROXIES")

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that stops answering refuses requests (503) within seconds
            # instead of holding a worker; older redis-py clients wait forever.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

RATELIMIT_VIEW = "accounts.views.ratelimited"
# A POST refused for CSRF is audited and counts against the run/login limits.
CSRF_FAILURE_VIEW = "migration_console.console.csrf.csrf_failure"
RATELIMIT_IP_META_KEY = "accounts.ip.client_ip"
# Console rate limits per client IP (django-ratelimit syntax, e.g. "5/m").
CONSOLE_LOGIN_RATE = env_str("CONSOLE_LOGIN_RATE", "5/m")
CONSOLE_RUN_RATE = env_str("CONSOLE_RUN_RATE", "10/m")
MIGRATION_API_RATE_READ = env_str("MIGRATION_API_RATE_READ", "120/m")
MIGRATION_API_RATE_RUN = env_str("MIGRATION_API_RATE_RUN", "6/m")
# The local-memory cache is only acceptable in development and in management
# commands; serving the console in production without Redis is refused in wsgi.py.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

# --- Production hardening ---------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = 0 if DEBUG else 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Django would believe X-Forwarded-Proto from any peer; gunicorn.conf.py believes it
# only from CONSOLE_TRUSTED_PROXIES and sets wsgi.url_scheme, which Django reads.
SECURE_PROXY_SSL_HEADER = None
X_FRAME_OPTIONS = "DENY"
# Sent on every response (migration_console.ops.middleware); no CDN, no inline scripts.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "migration_console.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": sys.stderr,
            "formatter": "plain" if DEBUG else "json",
        }
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Task registration at every start would litter migrate_sql's stderr.
        "procrastinate": {"level": "WARNING"},
    },
}
