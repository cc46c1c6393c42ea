import hashlib

import pytest

from migration_console.core.services.discovery import discover
from migration_console.core.services.errors import MigrationSetError
from migration_console.core.services.sqlsplit import split_statements


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_it_orders_versions_numerically_not_alphabetically(tmp_path):
    write(tmp_path, "10_ten.sql", "SELECT 10;")
    write(tmp_path, "9_nine.sql", "SELECT 9;")
    write(tmp_path, "20251127100000_late.sql", "SELECT 1;")
    write(tmp_path, "000_first.sql", "SELECT 0;")
    assert [f.version for f in discover(str(tmp_path))] == ["000", "9", "10", "20251127100000"]


def test_it_pairs_down_files_and_ignores_other_files(tmp_path):
    write(tmp_path, "001_a.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "001_a.down.sql", "DROP TABLE a;")
    write(tmp_path, "README.md", "not sql")
    write(tmp_path, "notes.txt", "x")
    [migration] = discover(str(tmp_path))
    assert migration.name == "a"
    assert migration.down_path.endswith("001_a.down.sql")


def test_checksum_is_sha256_of_lf_normalised_bytes(tmp_path):
    write(tmp_path, "001_crlf.sql", b"SELECT 1;\r\nSELECT 2;\r\n")
    write(tmp_path, "002_lf.sql", b"SELECT 1;\nSELECT 2;\n")
    crlf, lf = discover(str(tmp_path))
    expected = hashlib.sha256(b"SELECT 1;\nSELECT 2;\n").hexdigest()
    assert crlf.checksum == lf.checksum == expected


def test_it_reads_the_no_transaction_directive_only_on_the_first_line(tmp_path):
    write(
        tmp_path, "001_idx.sql", "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);"
    )
    write(tmp_path, "002_txn.sql", "SELECT 1;\n-- migrate:no-transaction\n")
    idx, txn = discover(str(tmp_path))
    assert idx.no_transaction is True
    assert txn.no_transaction is False


@pytest.mark.parametrize(
    ("files", "named", "reason"),
    [
        ({"001_a.sql": "SELECT 1;", "001_b.sql": "SELECT 2;"}, "001_", "duplicate version"),
        ({"1_a.sql": "SELECT 1;", "001_b.sql": "SELECT 2;"}, "_", "duplicate version"),
        ({"001_Bad-Name.sql": "SELECT 1;"}, "001_Bad-Name.sql", "does not match"),
        ({"abc.sql": "SELECT 1;"}, "abc.sql", "does not match"),
        ({"002_empty.sql": "  \n\n"}, "002_empty.sql", "empty"),
        ({"003_latin1.sql": b"SELECT '\xe9';"}, "003_latin1.sql", "UTF-8"),
        ({"004_orphan.down.sql": "DROP TABLE x;"}, "004_orphan.down.sql", "without an up file"),
    ],
)
def test_it_refuses_a_bad_set_naming_the_file(tmp_path, files, named, reason):
    for name, content in files.items():
        write(tmp_path, name, content)
    with pytest.raises(MigrationSetError) as error:
        discover(str(tmp_path))
    assert named in str(error.value)
    assert reason in str(error.value)


def test_it_refuses_a_file_it_cannot_read_naming_it(tmp_path):
    (tmp_path / "001_gone.sql").symlink_to(tmp_path / "nowhere.sql")
    with pytest.raises(MigrationSetError, match=r"001_gone\.sql: not a regular file"):
        discover(str(tmp_path))


def test_a_changed_file_is_re_read_despite_the_cache(tmp_path):
    path = write(tmp_path, "001_a.sql", "SELECT 1;")
    first = discover(str(tmp_path))[0].checksum
    path.write_text("SELECT 2; -- longer now")
    assert discover(str(tmp_path))[0].checksum != first


def test_splitter_keeps_semicolons_inside_strings_comments_and_dollar_quotes():
    sql = """
    -- a comment; with a semicolon
    CREATE FUNCTION f() RETURNS text AS $body$ SELECT 'a;b'; $body$ LANGUAGE sql;
    /* block; /* nested; */ still */ INSERT INTO t VALUES ('it''s; fine', E'esc\\';x');
    CREATE INDEX CONCURRENTLY i ON t (x)
    """
    statements = [s.strip() for s in split_statements(sql)]
    assert len(statements) == 3
    assert statements[0].endswith("LANGUAGE sql;")
    assert "nested" in statements[1] and statements[1].endswith("'esc\\';x');")
    assert statements[2].startswith("CREATE INDEX CONCURRENTLY")


@pytest.mark.parametrize(
    ("sql", "keyword", "line"),
    [
        ("BEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n", "BEGIN", 1),
        ("CREATE TABLE a (id int);\n-- done\ncommit;\n", "COMMIT", 3),
        ("CREATE TABLE a (id int);\n/* undo */ ROLLBACK;\n", "ROLLBACK", 2),
        ("start  transaction;\nSELECT 1;\n", "START TRANSACTION", 1),
    ],
)
def test_a_transactional_file_with_its_own_transaction_control_is_refused(
    tmp_path, sql, keyword, line
):
    write(tmp_path, "003_wrapped.sql", sql)
    with pytest.raises(MigrationSetError) as error:
        discover(str(tmp_path))
    assert f"003_wrapped.sql: {keyword} on line {line}" in str(error.value)


def test_transaction_words_inside_bodies_strings_and_savepoints_are_fine(tmp_path):
    write(
        tmp_path,
        "001_bodies.sql",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
        "COMMENT ON FUNCTION f() IS 'BEGIN; COMMIT;';\n"
        "SAVEPOINT s; ROLLBACK TO s; RELEASE s;\n"
        "-- COMMIT in a comment\n",
    )
    write(tmp_path, "002_idx.sql", "-- migrate:no-transaction\nBEGIN;\nCOMMIT;\n")
    assert [f.version for f in discover(str(tmp_path))] == ["001", "002"]
