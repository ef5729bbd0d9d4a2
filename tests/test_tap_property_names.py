"""A user's column named like a property the tap adds to LOG_BASED records never gives a record two keys of one name.

The tap's `_sdc_deleted_at` (and `_sdc_lsn` with debug_lsn) wins: a target deletes the rows whose
`_sdc_deleted_at` is set. The user's column is left out of the stream with one warning, or stops
the run when it is the key; FULL_TABLE and INCREMENTAL add no such property and emit it.
"""

from __future__ import annotations

import json

import pytest
from conftest import select_all, states_of

from tap_postgres import types
from tap_postgres.catalog import DELETED_AT, SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.sync.changes import with_new_columns

TEXT = types.ColumnType(base_name="text", base_kind="b", base_category="S")
PROPERTIES = {"type": "object", "properties": {"id": {"type": ["string"]}}}


def without_duplicate_keys(pairs: list[tuple]) -> dict:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a record with two keys of one name: {names}"
    return dict(pairs)


def sync(db, catalog: dict, state: dict | None = None, **settings) -> tuple[list[dict], str]:
    """Run a sync; return its messages, each line parsed refusing a repeated key, and its stderr."""
    args = ["--catalog", str(db.write_json("catalog.json", catalog))]
    if state is not None:
        args += ["--state", str(db.write_json("state.json", state))]
    lines, stderr, _ = db.run_tap(*args, config={**db.config, **settings})
    return [json.loads(line, object_pairs_hook=without_duplicate_keys) for line in lines], stderr


@pytest.fixture(scope="module")
def catalog(db) -> dict:
    db.execute('CREATE TABLE notes (id int PRIMARY KEY, note text, "_sdc_deleted_at" text)')
    db.execute("INSERT INTO notes VALUES (1, 'kept', 'the user''s own')")
    db.execute('CREATE TABLE keyed ("_sdc_lsn" int PRIMARY KEY)')
    db.create_slot()
    return db.discover()


def stream_of(catalog: dict, stream_id: str, method: str) -> dict:
    return select_all(json.loads(json.dumps(catalog)), method=method, only={stream_id})


def test_log_based_records_carry_the_taps_property_and_leave_the_users_column_out(db, catalog):
    chosen = stream_of(catalog, "public-notes", "LOG_BASED")
    first, stderr = sync(db, chosen, debug_lsn=True)
    assert 'public-notes: column "_sdc_deleted_at" is left out of LOG_BASED records' in stderr
    assert [m["record"] for m in first if m["type"] == "RECORD"] == [{"id": 1, "note": "kept"}]

    db.execute("ALTER TABLE notes ADD COLUMN _sdc_lsn text")  # one more, not in the catalog
    db.execute("INSERT INTO notes VALUES (2, 'new', 'set', 'set too')")
    db.execute("DELETE FROM notes WHERE id = 1")
    second, _ = sync(db, chosen, state=states_of(first)[-1], debug_lsn=True)
    records = [m["record"] for m in second if m["type"] == "RECORD"]
    assert [(r["id"], r["note"], r["_sdc_deleted_at"] is None, isinstance(r["_sdc_lsn"], int)) for r in records] == [
        (2, "new", True, True),
        (1, None, False, True),
    ]
    schema = next(m for m in second if m["type"] == "SCHEMA")["schema"]["properties"]
    assert schema["_sdc_deleted_at"] == {"type": ["null", "string"], "format": "date-time"}


def test_full_table_emits_the_users_column(db, catalog):
    messages, _ = sync(db, stream_of(catalog, "public-notes", "FULL_TABLE"))
    emitted = {m["record"]["id"]: m["record"]["_sdc_deleted_at"] for m in messages if m["type"] == "RECORD"}
    assert emitted == dict(db.query('SELECT id, "_sdc_deleted_at" FROM notes'))


def test_a_column_added_during_the_run_and_named_like_a_taps_property_is_left_out(caplog):
    columns = [Column(name, "text", ("pg_catalog", "text"), TEXT, False, None, True) for name in ("id", DELETED_AT)]
    table = Table("public", "notes", "r", 0, None, columns, ["id"])
    stream = SelectedStream("public-notes", "public", "notes", False, "LOG_BASED", None, ["id"], ["id"], PROPERTIES, {})
    widened, emitted = with_new_columns(stream, table, ["id", DELETED_AT], columns[:1], (DELETED_AT,))
    assert (widened, emitted) == (stream, columns[:1])
    assert 'New column "_sdc_deleted_at" of public-notes is named like a property the tap adds' in caplog.text


def test_a_key_column_named_like_a_taps_property_stops_the_run_with_one_line(db, catalog):
    messages, stderr, code = db.try_sync(
        stream_of(catalog, "public-keyed", "LOG_BASED"), {**db.config, "debug_lsn": True}
    )
    assert code != 0 and messages == []
    assert stderr[-1] == (
        'tap-postgres: error: stream "public-keyed": key column "_sdc_lsn" is named like a property LOG_BASED adds: '
        "rename the column, or replicate the stream with FULL_TABLE or INCREMENTAL, which add no such property"
    )
