"""The service layer: discovery, tracking table, lock, runner and run records.

Views, the JSON API and the ``migrate_sql`` command only translate to and from
these functions; nothing else opens a cursor on a target database.
"""
