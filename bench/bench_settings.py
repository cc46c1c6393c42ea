"""The console's production settings, with the API's read rate limit lifted so a
load test measures latency rather than answering 429 (the limit is a policy,
not a cost: the rate-limit check itself still runs on every request)."""

from migration_console.settings import *  # noqa: F403

MIGRATION_API_RATE_READ = "1000000/m"
