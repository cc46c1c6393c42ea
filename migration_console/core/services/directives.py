"""Per-file directives: ``-- migrate:<name> [value]`` in a file's leading comment lines.

A directive overrides a setting for that one file (SPEC "Migration files"):
``no-transaction``, ``lock-timeout <duration>``, ``statement-timeout <duration>``,
``lock-retries <n>``. An unknown directive or a bad value makes the file set bad, so
it is refused before anything runs, naming the file and the line.
"""

import re
from dataclasses import dataclass

from django.conf import settings

from migration_console.core.services.errors import MigrationSetError
from migration_console.env import duration_seconds

NO_TRANSACTION = "no-transaction"
LOCK_TIMEOUT = "lock-timeout"
STATEMENT_TIMEOUT = "statement-timeout"
LOCK_RETRIES = "lock-retries"
KNOWN = (NO_TRANSACTION, LOCK_TIMEOUT, STATEMENT_TIMEOUT, LOCK_RETRIES)
MAX_LOCK_RETRIES = 100

_DIRECTIVE = re.compile(r"^--\s*migrate:(?P<name>\S*)(?:\s+(?P<value>.*?))?\s*$")
_LEADING_COMMENT = re.compile(r"\s*--")  # \s: what str.strip() strips


@dataclass(frozen=True)
class FileDirectives:
    """What a file's directives say; ``None``: the setting's default applies."""

    no_transaction: bool = False
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    lock_retries: int | None = None


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings one file runs with: its directives over the defaults."""

    transaction: bool
    lock_timeout: str
    statement_timeout: str | None  # None: the target's own (not set by us)
    lock_retries: int  # further attempts after a lock timeout; 0 for no-transaction files
    overridden: tuple[str, ...]  # which directives the file sets

    def as_dict(self) -> dict:
        return {
            "transaction": self.transaction,
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "lock_retries": self.lock_retries,
            "directives": list(self.overridden),
        }


_NONE = FileDirectives()


def parse_directives(sql: str, filename: str) -> FileDirectives:
    """The directives of ``sql``'s leading comment lines; MigrationSetError for an
    unknown one, a repeated one or a bad value (naming the line)."""
    # Most files have no directive: skip the line split (cold status reads 10,000 files).
    if "migrate:" not in sql or not _LEADING_COMMENT.match(sql):
        return _NONE
    found: dict[str, object] = {}
    for number, line in enumerate(sql.split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _DIRECTIVE.match(stripped)
        if not match:
            continue
        name, value = match["name"], match["value"]

        def refuse(reason: str, *, line=number, text=stripped, known=""):
            raise MigrationSetError(filename, f"{reason} on line {line}: {text!r}{known}")

        if name not in KNOWN:
            refuse(
                "unknown directive", known=f" (known: {', '.join('migrate:' + k for k in KNOWN)})"
            )
        if name in found:
            refuse(f"directive migrate:{name} given twice")
        if name == NO_TRANSACTION:
            if value:
                refuse("migrate:no-transaction takes no value")
            found[name] = True
        elif name == LOCK_RETRIES:
            if not value or not value.isdigit() or int(value) > MAX_LOCK_RETRIES:
                refuse(f"migrate:lock-retries needs a whole number from 0 to {MAX_LOCK_RETRIES}")
            found[name] = int(value)
        else:
            if not value or duration_seconds(value) is None:
                refuse(
                    f"migrate:{name} needs a PostgreSQL duration "
                    "(e.g. 500ms, 2s, 15min; units us, ms, s, min, h, d)"
                )
            found[name] = value.replace(" ", "")
    return FileDirectives(
        no_transaction=bool(found.get(NO_TRANSACTION)),
        lock_timeout=found.get(LOCK_TIMEOUT),
        statement_timeout=found.get(STATEMENT_TIMEOUT),
        lock_retries=found.get(LOCK_RETRIES),
    )


def effective_settings(directives: FileDirectives) -> EffectiveSettings:
    overridden = tuple(
        name
        for name, value in (
            (NO_TRANSACTION, directives.no_transaction or None),
            (LOCK_TIMEOUT, directives.lock_timeout),
            (STATEMENT_TIMEOUT, directives.statement_timeout),
            (LOCK_RETRIES, directives.lock_retries),
        )
        if value is not None
    )
    retries = settings.MIGRATION_LOCK_RETRIES
    if directives.lock_retries is not None:
        retries = directives.lock_retries
    return EffectiveSettings(
        transaction=not directives.no_transaction,
        lock_timeout=directives.lock_timeout or settings.MIGRATION_LOCK_TIMEOUT,
        statement_timeout=directives.statement_timeout,
        lock_retries=0 if directives.no_transaction else retries,
        overridden=overridden,
    )
