"""Split a SQL script into statements the way psql does.

Only needed for no-transaction files: PostgreSQL runs a multi-statement query
string as one implicit transaction, which ``CREATE INDEX CONCURRENTLY``
refuses, so such files are sent one statement at a time.
"""

import re

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(sql: str) -> list[str]:
    return [sql[start:end] for start, end in statement_spans(sql)]


def statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each statement that holds code, ``;`` included."""
    spans: list[tuple[int, int]] = []
    start = 0
    i = 0
    length = len(sql)
    while i < length:
        char = sql[i]
        nxt = sql[i + 1] if i + 1 < length else ""
        if char == "-" and nxt == "-":
            end = sql.find("\n", i)
            i = length if end == -1 else end + 1
        elif char == "/" and nxt == "*":
            depth, i = 1, i + 2
            while i < length and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif char in ("'", '"'):
            escapes = char == "'" and i > 0 and sql[i - 1] in "eE"
            i += 1
            while i < length:
                if escapes and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == char:
                    if i + 1 < length and sql[i + 1] == char:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif char == "$":
            match = _DOLLAR_TAG.match(sql, i)
            if match and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = match.group(0)
                end = sql.find(tag, match.end())
                i = length if end == -1 else end + len(tag)
            else:
                i += 1
        elif char == ";":
            spans.append((start, i + 1))
            start = i = i + 1
        else:
            i += 1
    spans.append((start, length))
    return [(a, b) for a, b in spans if _has_code(sql[a:b])]


def _has_code(statement: str) -> bool:
    """True when the fragment holds more than whitespace, comments and semicolons."""
    stripped = re.sub(r"--[^\n]*", "", statement)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.S)
    return bool(stripped.replace(";", "").strip())


# Statements that end or open a transaction. A transactional file runs inside the
# runner's own transaction, together with its tracking row: one of these would
# commit half of it. (END is left out: it also closes a BEGIN ATOMIC body.)
_TRANSACTION_CONTROL = re.compile(
    r"(?:\s|--[^\n]*\n?|/\*.*?\*/)*"
    r"(BEGIN|COMMIT|ROLLBACK(?!\s+TO\b)|ABORT|START\s+TRANSACTION)\b",
    re.IGNORECASE | re.DOTALL,
)
_MAYBE_TRANSACTION_CONTROL = re.compile(r"\b(BEGIN|COMMIT|ROLLBACK|ABORT|START)\b", re.I)


def transaction_control(sql: str) -> tuple[str, int] | None:
    """The first statement that opens or ends a transaction, as (keyword, line), or None."""
    if not _MAYBE_TRANSACTION_CONTROL.search(sql):
        return None  # the common case, without splitting
    for start, end in statement_spans(sql):
        match = _TRANSACTION_CONTROL.match(sql, start, end)
        if match:
            keyword = " ".join(match.group(1).upper().split())
            return keyword, sql.count("\n", 0, match.start(1)) + 1
    return None
