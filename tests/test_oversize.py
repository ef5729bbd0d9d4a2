"""max_value_bytes: values longer than it are emitted as null with a warning naming them, under every method.

The server's own limit (a record over 1 GB of JSON, SQLSTATE 54000) is exercised by
tests/test_server_limits.py (`make limits`): its values take the server seconds to build.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import records_of, select_all

LIMIT = 1000
LONG_TEXT = "x" * 1500
# a value whose text is short but whose JSON is six times as long: measured on its text
ESCAPED = "\x01" * 400


@pytest.fixture(scope="module")
def catalog(db):
    db.execute(
        "CREATE TABLE docs (id text PRIMARY KEY, title text NOT NULL, body text NOT NULL, blob bytea, "
        "tags text[], doc jsonb, plain json, n int, updated int)"
    )
    db.execute(
        "INSERT INTO docs VALUES (%s, 'short', 'short body', '\\x00ff', '{a,b}', '{\"k\": 1}', '[1]', 1, 1)",
        ("a",),
    )
    db.execute(
        "INSERT INTO docs VALUES (%s, %s, %s, decode(repeat('ab', 600), 'hex'), "
        "array_fill('abcdefghij'::text, ARRAY[120]), jsonb_build_object('k', repeat('y', 1200)), "
        "json_build_array(repeat('z', 1100)), 2, 2)",
        ("b" * 1200, LONG_TEXT, LONG_TEXT),
    )
    db.execute("INSERT INTO docs VALUES ('c', 'escaped', %s, NULL, NULL, NULL, NULL, 3, 3)", (ESCAPED,))
    db.execute("CREATE TABLE notes (body text NOT NULL)")
    db.execute("INSERT INTO notes VALUES ('short'), (%s)", (LONG_TEXT,))
    return db.discover()


def only(catalog: dict, stream_id: str, method: str = "FULL_TABLE", replication_key: str | None = None) -> dict:
    return select_all(json.loads(json.dumps(catalog)), method, replication_key, only={stream_id})


def nulled_warnings(stderr: list[str]) -> list[tuple[str, str, str]]:
    """Return (stream, column, key) of each value the tap logged as nulled."""
    pattern = re.compile(r'(\S+): column "([^"]+)" of the row with key (.+?) is \d+ bytes long, over max_value_bytes')
    return [match.groups() for line in stderr if (match := pattern.search(line))]


def long_row(records: list[dict]) -> dict:
    return next(record for record in records if record["n"] == 2)


@pytest.mark.parametrize("method", ["FULL_TABLE", "INCREMENTAL"])
def test_long_values_are_emitted_as_null_with_a_warning_and_the_key_never(db, catalog, method):
    replication_key = "updated" if method == "INCREMENTAL" else None
    unlimited = db.sync(only(catalog, "public-docs", method, replication_key))
    messages, stderr, code = db.try_sync(
        only(catalog, "public-docs", method, replication_key), config=dict(db.config, max_value_bytes=LIMIT)
    )
    assert code == 0, stderr
    before, after = records_of(unlimited), records_of(messages)
    assert long_row(before)["body"] == LONG_TEXT
    nulled = {"title", "body", "blob", "tags", "doc", "plain"}
    assert long_row(after) == {**long_row(before), **dict.fromkeys(nulled, None)}
    # the key is longer than the limit too, and is emitted whole
    assert long_row(after)["id"] == "b" * 1200
    # the rows without long values, and the escaped one measured by its text, are unchanged
    assert [r for r in after if r["n"] != 2] == [r for r in before if r["n"] != 2]
    key = json.dumps({"id": "b" * 1200})
    assert sorted(nulled_warnings(stderr)) == sorted(("public-docs", column, key) for column in nulled)
    schema = next(m for m in messages if m["type"] == "SCHEMA")["schema"]["properties"]
    assert "null" in schema["body"]["type"] and "null" not in schema["id"]["type"]


def test_a_table_without_a_key_names_no_key(db, catalog):
    messages, stderr, code = db.try_sync(only(catalog, "public-notes"), config=dict(db.config, max_value_bytes=LIMIT))
    assert code == 0, stderr
    assert sorted(r["body"] or "" for r in records_of(messages)) == ["", "short"]
    assert [column for _, column, _ in nulled_warnings(stderr)] == ["body"]


def test_the_replication_key_is_never_nulled(db, catalog):
    messages, stderr, code = db.try_sync(
        only(catalog, "public-docs", "INCREMENTAL", "body"), config=dict(db.config, max_value_bytes=LIMIT)
    )
    assert code == 0, stderr
    assert long_row(records_of(messages))["body"] == LONG_TEXT
    assert "body" not in [column for _, column, _ in nulled_warnings(stderr)]


@pytest.mark.parametrize("plugin", ["wal2json", "pgoutput"])
def test_log_based_changes_and_initial_copy_null_long_values(db, catalog, plugin):
    db.drop_slots()
    db.plugin = plugin
    slot = db.create_slot()
    config = dict(db.config, max_value_bytes=LIMIT)
    log_based = only(catalog, "public-docs", "LOG_BASED")
    first, stderr, code = db.try_sync(log_based, config=config)
    assert code == 0, stderr
    assert long_row(records_of(first))["body"] is None
    db.execute("UPDATE docs SET body = body || '!', updated = 4 WHERE n = 2")
    state = [m["value"] for m in first if m["type"] == "STATE"][-1]
    second, stderr, code = db.try_sync(log_based, config=config, state=state)
    assert code == 0, stderr
    (change,) = records_of(second)
    assert change["body"] is None and change["updated"] == 4 and change["id"] == "b" * 1200
    assert ("public-docs", "body", json.dumps({"id": "b" * 1200})) in nulled_warnings(stderr)
    db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    db.plugin = "wal2json"


@pytest.mark.parametrize("plugin", ["wal2json", "pgoutput"])
def test_log_based_nulls_long_values_of_a_stream_the_tap_renders_itself(db, plugin):
    """Every column of `notebook` renders in the tap (sync/local_render.py): a long string, jsonb or
    tsvector still goes to the server to be judged, and a short one is the same as without a limit."""
    db.drop_slots()
    db.plugin = plugin
    slot = db.create_slot()
    db.execute("CREATE TABLE notebook (id int PRIMARY KEY, body text, doc jsonb, words tsvector, x float8)")
    try:
        config = dict(db.config, max_value_bytes=LIMIT)
        log_based = only(db.discover(), "public-notebook", "LOG_BASED")
        first, stderr, code = db.try_sync(log_based, config=config)
        assert code == 0, stderr
        db.execute(
            "INSERT INTO notebook VALUES (1, %s, jsonb_build_object('k', repeat('y', 1200)), "
            "to_tsvector('simple', repeat('w ', 10) || repeat('z', 1200)), 1.5), "
            "(2, 'short', '{\"k\": [1, 2]}', 'a:1 b:2', -0.0), (3, %s, NULL, NULL, NULL), "
            "(4, 'only the jsonb is long', jsonb_build_array(repeat('j', 1100)), NULL, NULL)",
            (LONG_TEXT, ESCAPED),
        )
        state = [m["value"] for m in first if m["type"] == "STATE"][-1]
        second, stderr, code = db.try_sync(log_based, config=config, state=state)
        assert code == 0, stderr
        long, short, escaped, long_jsonb = records_of(second)
        assert (long["id"], long["body"], long["doc"], long["words"], long["x"]) == (1, None, None, None, 1.5)
        assert short == {"id": 2, "body": "short", "doc": {"k": [1, 2]}, "words": "'a':1 'b':2", "x": 0,
                         "_sdc_deleted_at": None}  # fmt: skip
        assert escaped["body"] == ESCAPED  # its text is short, its JSON six times as long
        assert (long_jsonb["body"], long_jsonb["doc"]) == ("only the jsonb is long", None)
        assert sorted(column for _, column, _ in nulled_warnings(stderr)) == ["body", "doc", "doc", "words"]
    finally:
        db.execute("DROP TABLE notebook")
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        db.plugin = "wal2json"


def test_max_value_bytes_must_be_positive(db, catalog):
    _, stderr, code = db.try_sync(only(catalog, "public-notes"), config=dict(db.config, max_value_bytes=0))
    assert code != 0 and stderr[-1] == 'tap-postgres: error: config key "max_value_bytes" must be at least 1, got 0'
