#!/bin/sh
# Brings the console's own tables (users, tokens, runs, audit) up to date, then
# runs the container's command: gunicorn by default, or a migrate_sql call
# in a Job. Django's `migrate` only touches DATABASE_URL, never a target.
set -eu
python manage.py migrate --no-input -v0
exec "$@"
