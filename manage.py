#!/usr/bin/env python
import atexit
import gc
import os
import sys


def main():
    # Start-up leaves ~half a million long-lived objects (Django, psycopg, ninja...);
    # the collector's passes over them at interpreter exit cost 0.25-0.5 s per call
    # (bench/README.md "Where the time goes") and free nothing the OS would not.
    atexit.register(gc.freeze)
    # Start-up only builds objects that live as long as the process: no collection
    # until the apps are ready (migration_console.core's ready() freezes them and
    # turns it back on).
    gc.disable()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "migration_console.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
