"""Split a SQL script into statements the way psql does.

Only needed for no-transaction files: PostgreSQL runs a multi-statement query
string as one implicit transaction, which ``CREATE INDEX CONCURRENTLY``
refuses, so such files are sent one statement at a time.
"""

import re

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(sql: str) -> list[str]:
    statements: list[str] = []
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
            statements.append(sql[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    statements.append(sql[start:])
    return [s for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """True when the fragment holds more than whitespace, comments and semicolons."""
    stripped = re.sub(r"--[^\n]*", "", statement)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.S)
    return bool(stripped.replace(";", "").strip())
