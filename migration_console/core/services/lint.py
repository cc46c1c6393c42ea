"""Lint pending migration files with squawk (the ``squawk-cli`` package).

Findings are advice: ``plan``, the console and the API show them; only
``run --strict-lint`` refuses on error-level ones. squawk 2 reports every rule
as a warning (only unparsable SQL is an error), so the rules below, which break
a running application or hold long exclusive locks, are raised to ``error``.
Results are cached by file checksum: a polled status page never re-runs squawk,
and ``status --json`` keeps them between calls (``MIGRATION_CHECKSUM_CACHE_DIR``).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

from migration_console.core.services import checksum_cache
from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.errors import RunRefused

ERROR = "error"
WARNING = "warning"
NOT_INSTALLED = "squawk not installed"

ERROR_RULES = frozenset(
    {
        "syntax-error",
        "adding-required-field",
        "ban-drop-database",
        "ban-drop-table",
        "ban-drop-column",
        "renaming-column",
        "renaming-table",
        "changing-column-type",
        "ban-concurrent-index-creation-in-transaction",
        # BEGIN/COMMIT inside a file breaks the runner's one transaction per file.
        "transaction-nesting",
    }
)
# The runner sets lock_timeout itself (MIGRATION_LOCK_TIMEOUT), and a
# statement_timeout would cut long migrations (CREATE INDEX CONCURRENTLY) short.
EXCLUDED_RULES = ("require-lock-timeout", "require-statement-timeout")
SQUAWK_TIMEOUT_SECONDS = 60
STORED_FORMAT = 1  # bump when what a finding holds changes
STORED_MAX = 50_000  # results kept between calls; beyond, only the last call's


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str  # error | warning
    line: int  # 1-based
    message: str
    help: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        text = f"{self.level}: {self.rule} (line {self.line}): {self.message}"
        return f"{text} {self.help}" if self.help else text


@dataclass(frozen=True)
class LintResult:
    findings: tuple[Finding, ...] = ()
    unavailable: str | None = None  # why nothing could be checked

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    def as_dict(self) -> dict:
        return {
            "findings": [f.as_dict() for f in self.findings],
            "errors": len(self.errors),
            "unavailable": self.unavailable,
        }


_cache: dict[tuple[str, bool], LintResult] = {}


def squawk_binary() -> str | None:
    """The squawk that pip installed next to this interpreter, else one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "squawk")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("squawk")


def _finding(raw: dict, offset: int) -> Finding:
    rule = raw.get("rule_name") or "unknown"
    level = ERROR if raw.get("level") == "Error" or rule in ERROR_RULES else WARNING
    return Finding(
        rule=rule,
        level=level,
        line=max(1, int(raw.get("line") or 0) + 1 - offset),
        message=(raw.get("message") or "").strip(),
        help=raw.get("help") or None,
    )


def _squawk(binary: str, files: list[MigrationFile]) -> dict[str, list[Finding]]:
    """One squawk call for all ``files``. A transactional file is linted wrapped in
    BEGIN/COMMIT, as the runner runs it (squawk's --assume-in-transaction misses
    e.g. CREATE INDEX CONCURRENTLY inside a transaction)."""
    findings: dict[str, list[Finding]] = {f.version: [] for f in files}
    with tempfile.TemporaryDirectory(prefix="migration-console-lint-") as scratch:
        by_path: dict[str, tuple[MigrationFile, int]] = {}
        for index, migration in enumerate(files):
            path = os.path.join(scratch, f"{index}.sql")
            text = migration.sql
            offset = 0
            if not migration.no_transaction:
                text, offset = f"BEGIN;\n{text}\n;\nCOMMIT;\n", 1
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            by_path[path] = (migration, offset)
        command = [binary, "--reporter", "json", "--exclude", ",".join(EXCLUDED_RULES)]
        result = subprocess.run(
            [*command, *by_path],
            capture_output=True,
            text=True,
            timeout=SQUAWK_TIMEOUT_SECONDS,
            check=False,
            cwd=scratch,
        )
        try:
            raw = json.loads(result.stdout or "[]")
        except ValueError:
            reason = result.stderr.strip() or result.stdout.strip() or "no output"
            raise _SquawkFailed(f"squawk failed: {reason.splitlines()[-1]}") from None
        for item in raw:
            path = item.get("file", "")
            found = by_path.get(path) or by_path.get(os.path.join(scratch, path))
            if found is None:
                continue
            migration, offset = found
            findings[migration.version].append(_finding(item, offset))
    return findings


class _SquawkFailed(Exception):
    pass


def lint_files(files: list[MigrationFile], *, stored: bool = False) -> dict[str, LintResult]:
    """Findings per version; one squawk call for all files not yet cached. ``stored``:
    also reuse (and keep) results between processes, for read-only callers (never the
    ``--strict-lint`` gate, which lints what it is about to run itself)."""
    results: dict[str, LintResult] = {}
    todo: list[MigrationFile] = []
    for migration in files:
        cached = _cache.get((migration.checksum, migration.no_transaction))
        if cached is not None:
            results[migration.version] = cached
        else:
            todo.append(migration)
    if not todo:
        return results
    binary = squawk_binary()
    if binary is None:
        results.update({m.version: LintResult(unavailable=NOT_INSTALLED) for m in todo})
        return results
    store = _Store(binary) if stored else None
    if store is not None:
        todo = [m for m in todo if not store.recall(m, results)]
        if not todo:
            return results
    try:
        found = _squawk(binary, todo)
    except (_SquawkFailed, OSError, subprocess.TimeoutExpired) as exc:
        results.update({m.version: LintResult(unavailable=str(exc)) for m in todo})
        return results
    for migration in todo:
        ordered = sorted(found[migration.version], key=lambda f: (f.line, f.level, f.rule))
        result = LintResult(findings=tuple(ordered))
        _cache[(migration.checksum, migration.no_transaction)] = result
        results[migration.version] = result
    if store is not None:
        store.keep(todo, results)
    return results


class _Store:
    """Findings by (checksum, no_transaction) in a file per squawk binary and rule set."""

    def __init__(self, binary: str):
        stat = os.stat(binary)
        identity = "|".join(
            [
                str(STORED_FORMAT),
                os.path.realpath(binary),
                str(stat.st_size),
                str(stat.st_mtime_ns),
                ",".join(sorted(ERROR_RULES)),
                ",".join(EXCLUDED_RULES),
            ]
        )
        name = f"lint-{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"
        self.path = checksum_cache.cache_path(name)
        data = checksum_cache.read_json(self.path) if self.path else None
        self.entries = data if isinstance(data, dict) else {}

    @staticmethod
    def key(migration: MigrationFile) -> str:
        return f"{migration.checksum}:{int(migration.no_transaction)}"

    def recall(self, migration: MigrationFile, results: dict[str, LintResult]) -> bool:
        raw = self.entries.get(self.key(migration))
        try:
            findings = tuple(Finding(**finding) for finding in raw) if raw is not None else None
        except TypeError:
            findings = None  # damaged: lint again
        if findings is None:
            return False
        result = LintResult(findings=findings)
        _cache[(migration.checksum, migration.no_transaction)] = result
        results[migration.version] = result
        return True

    def keep(self, linted: list[MigrationFile], results: dict[str, LintResult]) -> None:
        if not self.path:
            return
        fresh = {self.key(m): [f.as_dict() for f in results[m.version].findings] for m in linted}
        entries = (
            {**self.entries, **fresh} if len(self.entries) + len(fresh) <= STORED_MAX else fresh
        )
        checksum_cache.write_json(self.path, entries)


def refuse_lint_errors(plan: list[MigrationFile]) -> None:
    """``run --strict-lint``: refuse before anything runs on any error-level finding."""
    results = lint_files(plan)
    blocked = []
    for migration in plan:
        result = results[migration.version]
        if result.unavailable:
            raise RunRefused(
                f"--strict-lint: cannot lint {migration.filename} ({result.unavailable})",
                reason="lint",
                versions=[migration.version],
            )
        for finding in result.errors:
            blocked.append((migration, finding))
    if blocked:
        names = "; ".join(f"{m.filename}: {f.rule} (line {f.line})" for m, f in blocked)
        raise RunRefused(
            f"--strict-lint: error-level findings: {names}",
            reason="lint",
            versions=sorted({m.version for m, _ in blocked}, key=lambda v: (int(v), v)),
        )
