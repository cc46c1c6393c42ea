"""Statements split and classified by PostgreSQL's own grammar (pglast)."""

import itertools

import pytest

from migration_console.core.services.discovery import MigrationSetError, discover
from migration_console.core.services.sqlsplit import (
    split_statements,
    statement_spans,
    transaction_control,
)
from tests.conftest import migrate_sql

ATOMIC = "CREATE FUNCTION three() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 3; END;"
PLPGSQL = """CREATE FUNCTION bump(x int) RETURNS int LANGUAGE plpgsql AS $body$
DECLARE
  s text := 'a;b $$ c';  -- a ; in a comment
BEGIN
  /* nested /* comment; */ still; */
  RETURN x + length(E'it\\'s;');
END
$body$;"""


def stripped(sql: str) -> list[str]:
    return [statement.strip() for statement in split_statements(sql)]


def test_it_keeps_a_begin_atomic_body_in_one_statement():
    assert stripped(f"{ATOMIC}\nSELECT three();\n") == [ATOMIC, "SELECT three();"]


def test_it_keeps_dollar_quoted_bodies_nested_comments_and_escaped_strings_whole():
    sql = f"{PLPGSQL}\nDO $$ BEGIN PERFORM 1; END $$;\nSELECT bump(1);"
    assert stripped(sql) == [PLPGSQL, "DO $$ BEGIN PERFORM 1; END $$;", "SELECT bump(1);"]


def test_a_backslash_ends_nothing_in_a_standard_string_but_escapes_in_an_e_string():
    assert stripped(r"SELECT 'a\'; SELECT E'b\';c';") == [r"SELECT 'a\';", r"SELECT E'b\';c';"]


def test_statements_keep_their_semicolon_and_leading_comments_and_a_comment_tail_is_none():
    sql = "-- head\nSELECT 1;\n/* a; b */ SELECT 2 /* c; */ ;\n-- tail; only\n/* x */\n"
    assert split_statements(sql) == ["-- head\nSELECT 1;", "\n/* a; b */ SELECT 2 /* c; */ ;"]


def test_the_last_statement_needs_no_semicolon():
    assert split_statements("SELECT 1;\nSELECT 2 -- no end\n") == [
        "SELECT 1;",
        "\nSELECT 2 -- no end\n",
    ]


def test_empty_statements_are_dropped():
    assert split_statements("SELECT 1;; ;\n/* ; */ ;SELECT 2;") == ["SELECT 1;", "SELECT 2;"]
    assert split_statements("-- only a comment; really\n") == []


@pytest.mark.parametrize("char", ["é", "☕", "😀"])
def test_offsets_count_characters_after_non_ascii_text(char):
    sql = (
        f"-- {char * 3}\nCREATE TABLE {char}t (v text DEFAULT '{char};');\n"
        f"/* {char} */ INSERT INTO \"{char}t\" VALUES ('{char}');\nSELECT 1"
    )
    assert stripped(sql) == [
        f"-- {char * 3}\nCREATE TABLE {char}t (v text DEFAULT '{char};');",
        f"/* {char} */ INSERT INTO \"{char}t\" VALUES ('{char}');",
        "SELECT 1",
    ]
    spans = statement_spans(sql)
    assert spans[0][0] == 0 and spans[-1][1] == len(sql)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))


def test_non_ascii_lines_do_not_shift_the_reported_line():
    sql = "-- 😀 é ☕\nINSERT INTO t VALUES ('ñ;');\n/* ü */ COMMIT;\n"
    assert transaction_control(sql) == ("COMMIT", 3)


def test_a_script_the_parser_refuses_is_left_whole_for_the_server_to_report():
    sql = "CREATE TABLE a (id int);\nCREATE TABLE b (id int;\n"
    assert split_statements(sql) == [sql]
    assert transaction_control("BEGIN;\nSELEC 1;\n") is None


def test_a_nul_character_does_not_hide_the_statements_after_it():
    sql = "SELECT 1;\x00 DROP TABLE t;"
    assert split_statements(sql) == [sql]


@pytest.mark.parametrize(
    ("sql", "keyword", "line"),
    [
        ("-- head\nbegin transaction;\nSELECT 1;\n", "BEGIN", 2),
        (f"{PLPGSQL}\n{ATOMIC}\nCOMMIT;\n", "COMMIT", 10),
        ("SELECT 1;\n\n  START TRANSACTION READ WRITE;\n", "START TRANSACTION", 3),
        ("SELECT 1; end;\n", "END", 1),
        ("SELECT 1;\nABORT;\n", "ABORT", 2),
        ("SELECT 1;\nROLLBACK AND NO CHAIN;\n", "ROLLBACK", 2),
        ("SELECT 1;\nPREPARE TRANSACTION 'x';\n", "PREPARE TRANSACTION", 2),
        ("SELECT 1;\n\nCOMMIT PREPARED 'x';\n", "COMMIT PREPARED", 3),
    ],
)
def test_a_transactional_file_naming_its_own_transaction_is_refused_at_that_line(
    tmp_path, sql, keyword, line
):
    (tmp_path / "004_wrapped.sql").write_text(sql)
    with pytest.raises(MigrationSetError) as error:
        discover(str(tmp_path))
    assert f"004_wrapped.sql: {keyword} on line {line}:" in str(error.value)


def test_savepoints_bodies_and_words_in_names_are_not_transaction_control():
    sql = (
        f"{PLPGSQL}\n{ATOMIC}\n"
        "SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s;\n"
        'CREATE TABLE start (begin_at int, "end" int);\n'
        "SELECT CASE WHEN true THEN 1 END; PREPARE q AS SELECT 1;\n"
        "COMMENT ON TABLE start IS 'COMMIT; ROLLBACK;'; -- BEGIN;\n"
    )
    assert transaction_control(sql) is None


@pytest.mark.django_db
def test_function_bodies_apply_in_both_file_kinds_and_are_callable_afterwards(target):
    target.write("001_functions.sql", f"{ATOMIC}\n{PLPGSQL}\n")
    target.write(
        "002_concurrently.sql",
        "-- migrate:no-transaction\n"
        + ATOMIC.replace("three", "three_nt")
        + "\n"
        + PLPGSQL.replace("bump", "bump_nt")
        + "\n-- café ☕: the offsets after this line are not byte offsets\n"
        + "CREATE TABLE items (id int, label text DEFAULT 'ü;');\n"
        + "CREATE INDEX CONCURRENTLY items_label ON items (label);\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert target.tracking()["001"][0] == "completed"
    assert target.tracking()["002"][0] == "completed"
    assert target.query("SELECT three(), bump(1), three_nt(), bump_nt(2)") == [(3, 6, 3, 7)]
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_label'::regclass"
    assert target.scalar(valid) is True


@pytest.mark.django_db
def test_a_no_transaction_file_with_a_syntax_error_runs_none_of_it_and_names_the_line(target):
    target.write(
        "001_broken.sql",
        "-- migrate:no-transaction\nCREATE TABLE a (id int);\n\nCREATE TABLE b (id int;\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code != 0
    assert "line 4 of 001_broken.sql" in out
    assert not target.table_exists("a")


# libpq sends a query as a C string, so the server would never see what follows a
# NUL: the file would end "completed" (or, transactional, half-applied without its
# tracking row). Discovery refuses such a file as a bad set.
@pytest.mark.django_db
@pytest.mark.parametrize("directive", ["-- migrate:no-transaction\n", ""])
def test_a_file_with_a_nul_character_runs_none_of_it(target, directive):
    target.write("001_nul.sql", f"{directive}CREATE TABLE a (id int);\x00\nCREATE TABLE b ();\n")
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert "001_nul.sql: NUL character on line" in out
    assert not target.table_exists("a")
