"""Split and classify a SQL script with PostgreSQL's own grammar.

pglast embeds libpg_query, the server's parser, so dollar quotes, ``BEGIN ATOMIC``
bodies, nested comments and ``E''`` strings end where the server says they end.

Splitting is needed for no-transaction files: PostgreSQL runs a multi-statement
query string as one implicit transaction, which ``CREATE INDEX CONCURRENTLY``
refuses, so such files are sent one statement at a time.
"""

import json
import re
from typing import NamedTuple

# pglast (libpg_query and its Python tree) is imported by the functions that parse:
# most files never need the parser (see transaction_control), and importing it costs
# every command's start-up tens of milliseconds.


class _Statement(NamedTuple):
    start: int  # just after the previous statement: leading comments belong to this one
    end: int  # just after its ";", or the end of the text
    first_token: int
    node: dict  # the parse tree, e.g. {"TransactionStmt": {"kind": ...}}


def split_statements(sql: str) -> list[str]:
    return [sql[start:end] for start, end in statement_spans(sql)]


def statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each statement, ``;`` included. A statement also holds
    the whitespace and comments before it; a tail of only comments is no statement.

    Text the parser refuses comes back as one span: the server parses a whole query
    string before running any of it, so it reports the syntax error (with its position,
    which is then the file's own) and runs nothing, rather than this module guessing
    where statements end or refusing a file the server's own grammar may accept.
    """
    from pglast.parser import ParseError

    try:
        statements = _parse(sql)
    except ParseError:
        return [(0, len(sql))]
    return [(statement.start, statement.end) for statement in statements]


# Statements that end or open a transaction. A transactional file runs inside the
# runner's own transaction, together with its tracking row: one of these would
# commit half of it, or leave the tracking row to a transaction nobody closes.
# Savepoints nest inside that transaction and are fine.
_SAVEPOINT_KINDS = {"TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO"}
_KIND_NAMES = {
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}
# Every transaction-control statement starts with one of these words: a file
# without any of them (most files) is not parsed at all.
_MAYBE_TRANSACTION_CONTROL = re.compile(
    r"\b(BEGIN|COMMIT|END|ROLLBACK|ABORT|START|PREPARE)\b", re.IGNORECASE
)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def transaction_control(sql: str) -> tuple[str, int] | None:
    """The first statement that opens or ends a transaction, as (keyword, line), or None.

    A file with a syntax error yields None: it is no set problem, and the server
    reports the error with its line when the file runs.
    """
    if not _MAYBE_TRANSACTION_CONTROL.search(sql):
        return None
    from pglast.parser import ParseError

    try:
        statements = _parse(sql)
    except ParseError:
        return None
    for statement in statements:
        kind = statement.node.get("TransactionStmt", {}).get("kind")
        if kind and kind not in _SAVEPOINT_KINDS:
            first = statement.first_token
            keyword = _KIND_NAMES.get(kind) or _FIRST_WORD.match(sql, first).group()
            return keyword.upper(), sql.count("\n", 0, first) + 1
    return None


def _parse(sql: str) -> list[_Statement]:
    """The script's statements, with ``str`` offsets.

    The JSON form of the parse tree is used because it carries libpg_query's UTF-8
    byte offsets untouched: pglast's Python tree converts each location with a scan
    over every multi-byte character, which makes a non-ASCII script take minutes.
    """
    from pglast.parser import ParseError, parse_sql_json

    nul = sql.find("\x00")
    if nul != -1:
        # The parser takes a C string and would silently stop at the NUL.
        raise ParseError("NUL character", nul)
    raw = json.loads(parse_sql_json(sql)).get("stmts", [])
    encoded = sql.encode()
    byte_offsets = []
    for item in raw:
        # The grammar leaves out zero fields: no location for the first byte, no length
        # for a last statement that has no ";" and runs to the end of the text.
        start = item.get("stmt_location", 0)
        end = start + item["stmt_len"] if "stmt_len" in item else len(encoded)
        if encoded[end : end + 1] == b";":
            end += 1
        byte_offsets += (start, end)
    offsets = _char_offsets(sql, encoded, byte_offsets)
    statements = []
    previous_end = 0
    for item, first_token, end in zip(raw, offsets[::2], offsets[1::2], strict=True):
        start = _after_empty_statements(sql, previous_end, first_token)
        statements.append(_Statement(start, end, first_token, item["stmt"]))
        previous_end = end
    return statements


def _char_offsets(sql: str, encoded: bytes, byte_offsets: list[int]) -> list[int]:
    """``str`` indexes of ascending UTF-8 byte offsets, each at a character boundary."""
    if len(encoded) == len(sql):
        return byte_offsets
    indexes, index, previous = [], 0, 0
    for offset in byte_offsets:
        index += len(encoded[previous:offset].decode())
        previous = offset
        indexes.append(index)
    return indexes


def _after_empty_statements(sql: str, start: int, first_token: int) -> int:
    """Where a statement's text begins: after the last stray ``;`` of the comments and
    whitespace before it (``;`` inside those comments does not count)."""
    gap = sql[start:first_token]
    if ";" not in gap:
        return start
    from pglast.parser import scan

    semicolons = [token.end for token in scan(gap) if token.name == "ASCII_59"]
    return start + semicolons[-1] + 1 if semicolons else start


# ALTER TABLE subcommands that take a lock weaker than ACCESS EXCLUSIVE (PostgreSQL's
# ALTER TABLE reference); every other one blocks all reads and writes of the table.
_LIGHTER_ALTER = {
    "AT_ValidateConstraint",
    "AT_SetStatistics",
    "AT_SetOptions",
    "AT_ResetOptions",
    "AT_ClusterOn",
    "AT_DropCluster",
    "AT_AttachPartition",
    "AT_DetachPartitionFinalize",
    "AT_AddForeignKey",
}
_EXCLUSIVE_DROPS = {"OBJECT_TABLE", "OBJECT_MATVIEW", "OBJECT_INDEX", "OBJECT_VIEW"}
ACCESS_EXCLUSIVE_MODE = 8  # LockStmt's mode number


class ExclusiveLock(NamedTuple):
    table: str
    statement: str  # e.g. "ALTER TABLE"
    line: int


def _relation_name(relation: dict) -> str:
    return ".".join(p for p in (relation.get("schemaname"), relation.get("relname")) if p)


def _alter_subtype(command: dict) -> str:
    subtype = command.get("subtype", "")
    constraint = command.get("def", {}).get("Constraint", {})
    if subtype == "AT_AddConstraint" and constraint.get("contype") == "CONSTR_FOREIGN":
        return "AT_AddForeignKey"  # SHARE ROW EXCLUSIVE on both tables
    return subtype


def _exclusive_tables(node: dict) -> tuple[str, list[str]]:
    """(statement words, tables it locks ACCESS EXCLUSIVE) of one parse tree node."""
    kind, body = next(iter(node.items()))
    if kind == "AlterTableStmt" and body.get("objtype", "OBJECT_TABLE") == "OBJECT_TABLE":
        subtypes = {_alter_subtype(cmd.get("AlterTableCmd", {})) for cmd in body.get("cmds", [])}
        if subtypes - _LIGHTER_ALTER:
            return "ALTER TABLE", [_relation_name(body["relation"])]
    elif kind == "RenameStmt" and "relation" in body:
        return "ALTER … RENAME", [_relation_name(body["relation"])]
    elif kind == "DropStmt" and body.get("removeType") in _EXCLUSIVE_DROPS:
        if not body.get("concurrent"):
            names = [
                ".".join(s["String"]["sval"] for s in item["List"]["items"])
                for item in body.get("objects", [])
                if "List" in item
            ]
            return "DROP " + body["removeType"].removeprefix("OBJECT_"), names
    elif kind == "TruncateStmt":
        return "TRUNCATE", [_relation_name(r["RangeVar"]) for r in body.get("relations", [])]
    elif kind == "LockStmt" and body.get("mode") == ACCESS_EXCLUSIVE_MODE:
        return "LOCK TABLE", [_relation_name(r["RangeVar"]) for r in body.get("relations", [])]
    elif kind == "VacuumStmt" and any(
        option.get("DefElem", {}).get("defname") == "full" for option in body.get("options", [])
    ):
        return "VACUUM FULL", [
            _relation_name(r["VacuumRelation"]["relation"]) for r in body.get("rels", [])
        ]
    elif kind == "ClusterStmt" and "relation" in body:
        return "CLUSTER", [_relation_name(body["relation"])]
    elif kind == "RefreshMatViewStmt" and not body.get("concurrent"):
        return "REFRESH MATERIALIZED VIEW", [_relation_name(body["relation"])]
    return "", []


def access_exclusive_locks(sql: str) -> list[ExclusiveLock]:
    """The tables the script's statements lock ACCESS EXCLUSIVE (every query on them
    waits behind such a statement while it waits for its lock). A script the parser
    refuses has none: the server reports its error when it runs."""
    from pglast.parser import ParseError

    try:
        statements = _parse(sql)
    except ParseError:
        return []
    found = []
    for statement in statements:
        words, tables = _exclusive_tables(statement.node)
        line = sql.count("\n", 0, statement.first_token) + 1
        found += [ExclusiveLock(table, words, line) for table in tables]
    return found
