"""Generated columns carry their value under every method, through wal2json and pgoutput alike.

pgoutput sends no generated column (before PostgreSQL 18, or unless the publication asks): the
render query evaluates the column's expression over the change's own values. Every LOG_BASED
record's generated values are checked against what FULL_TABLE emits for a row of the same
ordinary values (a mirror table with the same definitions, copied once).
"""

from __future__ import annotations

import copy

import pytest
from conftest import records_of, select_all, states_of

ITEMS = """
CREATE SCHEMA fns;
CREATE FUNCTION fns.label_of(label text, p int) RETURNS text IMMUTABLE LANGUAGE sql
    AS $$ SELECT upper(label) || '#' || p::text $$;
CREATE TABLE items (
    id int PRIMARY KEY,
    p int,
    label text,
    note text,
    g int GENERATED ALWAYS AS (p * 2) STORED,
    t text GENERATED ALWAYS AS (fns.label_of(label, p)) STORED
);
CREATE TABLE items_full (LIKE items INCLUDING GENERATED INCLUDING CONSTRAINTS, PRIMARY KEY (id));
ALTER TABLE items_full REPLICA IDENTITY FULL;
CREATE TABLE "Odd ""Names"" Here" (
    id int PRIMARY KEY,
    "Weird ""col"" Name" int,
    "select" text,
    "from" text GENERATED ALWAYS AS (upper("select") || ("Weird ""col"" Name" % 1000 + 1)::text) STORED
);
CREATE TABLE keyed_only (k int PRIMARY KEY, gk int GENERATED ALWAYS AS (k + 1) STORED);
CREATE TABLE documents (
    id int PRIMARY KEY,
    title text,
    body text,
    body_length int GENERATED ALWAYS AS (length(body) + length(title)) STORED
);
"""
ORDINARY = ("id", "p", "label", "note")


HOSTILE = '"Odd ""Names"" Here"'
HOSTILE_INPUTS = ('Weird "col" Name', "select")
STREAMS = {"public-items", "public-items_full", 'public-Odd "Names" Here', "public-documents", "public-keyed_only"}


@pytest.fixture(scope="module", params=["wal2json", "pgoutput"])
def plugin(db, request):
    """The tables and a slot of the plugin, dropped after the plugin's tests."""
    if request.param == "wal2json" and not db.server.has_wal2json:
        pytest.skip("needs wal2json, which only Debian's 15 here has (make test runs it there)")
    db.plugin = request.param
    db.execute(ITEMS)
    db.execute("CREATE TABLE mirror (n int PRIMARY KEY, LIKE items INCLUDING GENERATED)")
    db.create_slot()
    yield request.param
    db.drop_slots()
    for (name,) in db.query("SELECT pubname FROM pg_publication"):
        db.execute(f'DROP PUBLICATION "{name}"')
    db.execute(f"DROP SCHEMA fns CASCADE; DROP TABLE items, items_full, {HOSTILE}, documents, keyed_only, mirror")


@pytest.fixture(scope="module")
def discovered(db, plugin) -> dict:
    return db.discover()


def chosen(catalog: dict, only: set[str], **method) -> dict:
    """Return a copy of the discovered catalog with only these streams selected."""
    return select_all(copy.deepcopy(catalog), only=only, **method)


@pytest.fixture(scope="module")
def runs(db, discovered) -> tuple[dict, dict]:
    """Copy the tables, change them, read the changes: each run's records by stream."""
    db.execute("INSERT INTO items (id, p, label, note) VALUES (1, 1, 'one', 'a'), (2, 2, 'two', 'b')")
    db.execute("INSERT INTO items_full (id, p, label, note) VALUES (1, 1, 'one', 'a')")
    db.execute("INSERT INTO keyed_only VALUES (1)")
    db.execute(f'INSERT INTO {HOSTILE} (id, "Weird ""col"" Name", "select") VALUES (1, 1, \'a\')')
    # random hex does not compress, so the value is stored out of line (TOAST) and left out of updates
    db.execute(
        "INSERT INTO documents (id, title, body) "
        "SELECT 1, 'draft', string_agg(md5(random()::text), '') FROM generate_series(1, 400)"
    )
    catalog = chosen(discovered, STREAMS, method="LOG_BASED")
    # the expressions' inputs are not emitted: the render query still reads them from the change
    deselect(catalog, 'public-Odd "Names" Here', HOSTILE_INPUTS)
    deselect(catalog, "public-documents", ("body",))
    first = db.sync(catalog)

    db.execute("INSERT INTO items (id, p, label, note) VALUES (3, 3, 'three', 'c')")
    db.execute("UPDATE items SET p = 10 WHERE id = 1")  # an input changes
    db.execute("UPDATE items SET p = 20 WHERE id = 1")  # twice: each record has its own value, not the last
    db.execute("UPDATE items SET note = 'bb' WHERE id = 2")  # only a column no expression reads
    db.execute("UPDATE items SET label = NULL WHERE id = 3")  # the text expression's result turns null
    db.execute("INSERT INTO items (id, p, label) VALUES (4, NULL, 'four')")
    db.execute("DELETE FROM items WHERE id = 2")
    db.execute("UPDATE items SET id = 5, p = 5 WHERE id = 4")  # a key change: a delete of 4, then 5
    db.execute("UPDATE items_full SET p = 7 WHERE id = 1")
    db.execute("DELETE FROM items_full WHERE id = 1")
    db.execute(f'INSERT INTO {HOSTILE} (id, "Weird ""col"" Name", "select") VALUES (2, 41, \'it\'\'s\')')
    db.execute(f"UPDATE {HOSTILE} SET \"select\" = 'b' WHERE id = 1")
    db.execute(f"DELETE FROM {HOSTILE} WHERE id = 2")
    db.execute("UPDATE documents SET title = 'final' WHERE id = 1")
    db.execute("DELETE FROM keyed_only")
    second = db.sync(catalog, state=states_of(first)[-1])
    return by_stream(first), by_stream(second)


def deselect(catalog: dict, stream_id: str, columns: tuple[str, ...]) -> None:
    stream = next(stream for stream in catalog["streams"] if stream["tap_stream_id"] == stream_id)
    for entry in stream["metadata"]:
        if entry["breadcrumb"][1:] and entry["breadcrumb"][1] in columns:
            entry["metadata"]["selected"] = False


def by_stream(messages: list[dict]) -> dict[str, list[dict]]:
    return {stream: records_of(messages, stream) for stream in STREAMS}


def full_table_values(db, discovered: dict, records: list[dict]) -> list[dict]:
    """Return what FULL_TABLE emits for rows of each record's ordinary values of items, in the records' order."""
    db.execute("TRUNCATE mirror")
    for n, record in enumerate(records):
        db.execute(
            "INSERT INTO mirror (n, id, p, label, note) VALUES (%s, %s, %s, %s, %s)",
            (n, *(record[name] for name in ORDINARY)),
        )
    catalog = chosen(discovered, {"public-mirror"})
    mirrored = sorted(records_of(db.sync(catalog), "public-mirror"), key=lambda row: row["n"])
    return [{"g": row["g"], "t": row["t"]} for row in mirrored]


def test_log_based_records_carry_the_generated_values_full_table_emits(db, discovered, runs):
    copied, changes = runs
    assert [(r["g"], r["t"]) for r in copied["public-items"]] == [(2, "ONE#1"), (4, "TWO#2")]
    records = changes["public-items"]
    changed = [r for r in records if r["_sdc_deleted_at"] is None]
    assert [(r["id"], r["g"], r["t"]) for r in changed] == [
        (3, 6, "THREE#3"),
        (1, 20, "ONE#10"),
        (1, 40, "ONE#20"),
        (2, 4, "TWO#2"),
        (3, 6, None),
        (4, None, None),
        (5, 10, "FOUR#5"),
    ]
    assert [{"g": r["g"], "t": r["t"]} for r in changed] == full_table_values(db, discovered, changed)
    # a delete carries the key: its generated columns are null like every other column outside it
    deleted = [r for r in records if r["_sdc_deleted_at"] is not None]
    assert [(r["id"], r["p"], r["g"], r["t"]) for r in deleted] == [(2, None, None, None), (4, None, None, None)]


def test_a_delete_with_replica_identity_full_carries_the_old_generated_values(runs):
    records = runs[1]["public-items_full"]
    assert [(r["p"], r["g"], r["t"], r["_sdc_deleted_at"] is not None) for r in records] == [
        (7, 14, "ONE#7", False),
        (7, 14, "ONE#7", True),
    ]


def test_a_delete_by_key_leaves_a_generated_column_of_the_key_null(runs):
    # the key is all the expression reads, but the identity is not FULL: null, as wal2json sends it
    assert [(r["k"], r["gk"], r["_sdc_deleted_at"] is not None) for r in runs[1]["public-keyed_only"]] == [
        (1, None, True)
    ]


def test_an_expression_over_hostile_names_and_columns_the_stream_leaves_out(runs):
    copied, changes = runs
    assert copied['public-Odd "Names" Here'] == [{"id": 1, "from": "A2"}]
    records = changes['public-Odd "Names" Here']
    assert [(r["id"], r["from"], r["_sdc_deleted_at"] is not None) for r in records] == [
        (2, "IT'S42", False),
        (1, "B2", False),
        (2, None, True),
    ]
    assert set(records[0]) == {"id", "from", "_sdc_deleted_at"}


def test_an_unchanged_toasted_input_gives_the_stored_rows_value(runs):
    records = runs[1]["public-documents"]
    assert [(r["title"], r["body_length"]) for r in records] == [("final", 32 * 400 + 5)]


def test_incremental_emits_generated_values(db, discovered, runs):
    catalog = chosen(discovered, {"public-items"}, method="INCREMENTAL", replication_key="id")
    rows = {r["id"]: (r["g"], r["t"]) for r in records_of(db.sync(catalog))}
    assert rows == {id_: (g, t) for id_, g, t in db.query("SELECT id, g, t FROM items")}


def test_virtual_generated_columns_are_evaluated(db, plugin):
    """PostgreSQL 18's virtual generated columns are never in the WAL: every change evaluates them."""
    if db.query("SELECT current_setting('server_version_num')::int")[0][0] < 180000:
        pytest.skip("virtual generated columns are new in PostgreSQL 18")
    db.execute(
        "CREATE TABLE virtual_items (id int PRIMARY KEY, p int, "
        "v int GENERATED ALWAYS AS (p * 3) VIRTUAL, s int GENERATED ALWAYS AS (p + 1) STORED)"
    )
    try:
        db.execute("INSERT INTO virtual_items (id, p) VALUES (1, 1)")
        catalog = select_all(db.discover(), method="LOG_BASED", only={"public-virtual_items"})
        first = db.sync(catalog)
        db.execute("INSERT INTO virtual_items (id, p) VALUES (2, 5)")
        db.execute("UPDATE virtual_items SET p = 7 WHERE id = 1")
        db.execute("DELETE FROM virtual_items WHERE id = 2")
        records = records_of(db.sync(catalog, state=states_of(first)[-1]))
        assert [(r["id"], r["v"], r["s"]) for r in records_of(first)] == [(1, 3, 2)]
        assert [(r["id"], r["v"], r["s"], r["_sdc_deleted_at"] is None) for r in records] == [
            (2, 15, 6, True),
            (1, 21, 8, True),
            (2, None, None, False),
        ]
    finally:
        db.execute("DROP TABLE virtual_items")


def test_a_full_identity_table_with_a_virtual_column_is_refused_and_never_published(db, plugin):
    """On 18 such a table in any publication rejects every UPDATE and DELETE, the other applications' too."""
    if db.query("SELECT current_setting('server_version_num')::int")[0][0] < 180000 or plugin != "pgoutput":
        pytest.skip("virtual generated columns are new in PostgreSQL 18; only pgoutput publishes")
    db.execute(
        "CREATE TABLE virtual_full (id int PRIMARY KEY, p int, v int GENERATED ALWAYS AS (p * 3) VIRTUAL);"
        "ALTER TABLE virtual_full REPLICA IDENTITY FULL; INSERT INTO virtual_full (id, p) VALUES (1, 1)"
    )
    try:
        catalog = select_all(db.discover(), method="LOG_BASED", only={"public-virtual_full"})
        messages, stderr, code = db.try_sync(catalog)
        assert code == 1 and not records_of(messages), stderr
        assert "REPLICA IDENTITY FULL and a virtual generated column" in stderr[-1]
        assert not db.query("SELECT 1 FROM pg_publication_tables WHERE tablename = 'virtual_full'")
        db.execute("UPDATE virtual_full SET p = 2")  # still writable
    finally:
        db.execute("DROP TABLE virtual_full")
