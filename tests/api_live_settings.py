"""Settings for the live server the schema-driven API test fuzzes: generous rate limits,
so the run explores the API instead of collecting 429s. Everything else as in production
settings."""

from migration_console.settings import *  # noqa: F403

MIGRATION_API_RATE_READ = "100000/m"
MIGRATION_API_RATE_RUN = "100000/m"
