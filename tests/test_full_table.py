"""FULL_TABLE: pipelinewise's message sequence and state, resumable after kill -9 without losing a row."""

from __future__ import annotations

import json
import signal

import pytest
from conftest import records_of, select_all, states_of, without_origin


@pytest.fixture(scope="module")
def catalog(db):
    db.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10, 2), secret text)")
    db.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5, 'hidden' FROM generate_series(1, 20000) g")
    db.execute("CREATE TABLE no_key (label text, amount int)")
    db.execute("INSERT INTO no_key VALUES ('a', 1), ('b', 2), ('a', 1)")
    db.execute("CREATE VIEW cheap_items AS SELECT id, name FROM items WHERE price < 6")
    db.execute("CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b))")
    db.execute("INSERT INTO pairs SELECT g % 7, 'k' || g, g FROM generate_series(1, 500) g")
    return db.discover()


def only(catalog: dict, *stream_ids: str) -> dict:
    return select_all(json.loads(json.dumps(catalog)), only=set(stream_ids))


def test_first_run_sequence_matches_pipelinewise(db, catalog):
    messages = db.sync(only(catalog, "public-no_key"), config=dict(db.config, itersize=2))
    # STATE messages between the records record the block ranges copied
    types = [m["type"] for m in messages]
    assert types[:3] == ["SCHEMA", "STATE", "ACTIVATE_VERSION"] and types[-2:] == ["ACTIVATE_VERSION", "STATE"]
    assert [t for t in types[3:-2] if t != "STATE"] == ["RECORD", "RECORD", "RECORD"]
    version = messages[2]["version"]
    assert without_origin(messages[1]["value"]) == {
        "bookmarks": {"public-no_key": {"last_replication_method": "FULL_TABLE", "version": version}},
        "currently_syncing": "public-no_key",
    }
    assert without_origin(messages[-1]["value"]) == {
        "bookmarks": {"public-no_key": {"last_replication_method": "FULL_TABLE", "version": version}},
        "currently_syncing": None,
    }
    assert sorted((r["label"], r["amount"]) for r in records_of(messages)) == [("a", 1), ("a", 1), ("b", 2)]
    assert all(m["version"] == version for m in messages if m["type"] == "RECORD")


def test_later_run_uses_a_new_version_and_activates_it_only_at_the_end(db, catalog):
    first = db.sync(only(catalog, "public-no_key"))
    second = db.sync(only(catalog, "public-no_key"), state=states_of(first)[-1])
    activations = [m for m in second if m["type"] == "ACTIVATE_VERSION"]
    assert len(activations) == 1 and second.index(activations[0]) > max(
        i for i, m in enumerate(second) if m["type"] == "RECORD"
    )
    assert activations[0]["version"] > states_of(first)[-1]["bookmarks"]["public-no_key"]["version"]


def test_table_checkpoints_a_range_of_blocks_of_about_itersize_rows(db, catalog):
    db.execute("ANALYZE items")
    messages = db.sync(only(catalog, "public-items"), config=dict(db.config, itersize=5000, full_table_sessions=1))
    assert sorted(r["id"] for r in records_of(messages)) == list(range(1, 20001))
    checkpoints = [s["bookmarks"]["public-items"].get("copied_blocks") for s in states_of(messages)]
    belows = [copied["items"]["below"] for copied in checkpoints if copied and copied.get("items")]
    blocks = db.query("SELECT pg_relation_size('items') / 8192")[0][0]
    # one session copies its ranges in block order: the low-water mark moves range by range
    assert belows == sorted(belows) and belows[-1] == blocks and 3 <= len(set(belows)) <= 5
    assert "copied_blocks" not in states_of(messages)[-1]["bookmarks"]["public-items"]


def test_composite_key_table_is_copied_completely(db, catalog):
    messages = db.sync(only(catalog, "public-pairs"), config=dict(db.config, itersize=37))
    assert sorted(r["v"] for r in records_of(messages)) == list(range(1, 501))


def copied_below(state: dict, stream_id: str, relation: str) -> int:
    """Return the block below which a state records every block of `relation` copied."""
    return ((state["bookmarks"][stream_id].get("copied_blocks") or {}).get(relation) or {}).get("below", 0)


def test_full_table_resumes_after_kill_without_losing_rows(db, catalog):
    config = dict(db.config, itersize=500, full_table_sessions=1)
    process = db.start_sync(only(catalog, "public-items"), config=config)
    first_run, last_state = [], None
    blocks = db.query("SELECT pg_relation_size('items') / 8192")[0][0]
    for line in process.stdout:
        message = json.loads(line)
        first_run.append(message)
        if message["type"] == "STATE":
            last_state = message["value"]
            if copied_below(last_state, "public-items", "items") >= blocks // 3:
                break
    process.send_signal(signal.SIGKILL)
    process.wait()

    # while the tap is down: a row in the copied blocks changes, one is added
    db.execute("UPDATE items SET name = 'renamed' WHERE id = 10")
    db.execute("INSERT INTO items VALUES (-1, 'new and early', 1, 'x')")
    try:
        second_run = db.sync(only(catalog, "public-items"), state=last_state, config=config)
    finally:
        db.execute("DELETE FROM items WHERE id = -1")
        db.execute("UPDATE items SET name = 'item 10' WHERE id = 10")

    version = last_state["bookmarks"]["public-items"]["version"]
    assert {m["version"] for m in second_run if m["type"] in ("RECORD", "ACTIVATE_VERSION")} == {version}
    delivered = {r["id"]: r for r in records_of(first_run) + records_of(second_run)}
    assert set(delivered) == set(range(1, 20001)) | {-1}
    assert [r["name"] for r in records_of(second_run) if r["id"] == 10] == ["renamed"]
    # one session wrote nothing past its last STATE that was read: only the changed row comes again
    again = {r["id"] for r in records_of(first_run)} & {r["id"] for r in records_of(second_run)}
    assert again == {10}
    final = states_of(second_run)[-1]
    assert final["currently_syncing"] is None
    assert set(final["bookmarks"]["public-items"]) == {"last_replication_method", "version", "origin"}


def test_pipelinewise_interrupted_state_copies_the_table_again_under_its_version(db, catalog):
    state = {
        "currently_syncing": "public-no_key",
        "bookmarks": {
            "public-no_key": {"last_replication_method": "FULL_TABLE", "version": 1600000000000, "xmin": 4242}
        },
    }
    messages = db.sync(only(catalog, "public-no_key"), state=state)
    assert len(records_of(messages)) == 3
    assert {m["version"] for m in messages if m["type"] == "RECORD"} == {1600000000000}
    assert without_origin(states_of(messages)[-1])["bookmarks"]["public-no_key"] == {
        "last_replication_method": "FULL_TABLE",
        "version": 1600000000000,
    }


def test_views_are_copied(db, catalog):
    messages = db.sync(only(catalog, "public-cheap_items"))
    assert [r["id"] for r in records_of(messages)] == [1, 2, 3]
    schema = next(m for m in messages if m["type"] == "SCHEMA")
    assert schema["key_properties"] == []


def test_view_key_properties_are_used_for_views(db, catalog):
    chosen = only(catalog, "public-cheap_items")
    view = next(s for s in chosen["streams"] if s["tap_stream_id"] == "public-cheap_items")
    view["metadata"][0]["metadata"]["view-key-properties"] = ["id"]
    schema = next(m for m in db.sync(chosen) if m["type"] == "SCHEMA")
    assert schema["key_properties"] == ["id"]


def test_deselected_column_is_neither_queried_nor_emitted(db, catalog):
    db.execute("DROP ROLE IF EXISTS items_reader")
    db.execute("CREATE ROLE items_reader LOGIN PASSWORD 'reader-pw'")
    db.execute("GRANT SELECT (id, name, price) ON items TO items_reader")
    chosen = only(catalog, "public-items")
    items = next(s for s in chosen["streams"] if s["tap_stream_id"] == "public-items")
    secret_md = next(m for m in items["metadata"] if m["breadcrumb"] == ["properties", "secret"])
    secret_md["metadata"]["selected"] = False
    messages = db.sync(chosen, config=dict(db.config, user="items_reader", password="reader-pw"))
    assert set(records_of(messages)[0]) == {"id", "name", "price"}
    schema = next(m for m in messages if m["type"] == "SCHEMA")
    assert set(schema["schema"]["properties"]) == {"id", "name", "price"}


def test_dropped_table_is_a_one_line_error_naming_it(db, catalog):
    db.execute("CREATE TABLE short_lived (id int PRIMARY KEY)")
    chosen = select_all(db.discover(), only={"public-short_lived"})
    db.execute("DROP TABLE short_lived")
    lines, stderr, code = db.run_tap("--catalog", str(db.write_json("catalog.json", chosen)), check=False)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        'tap-postgres: error: table "public"."short_lived" of stream public-short_lived no longer exists: '
        "rerun --discover and update the catalog"
    )


def test_currently_syncing_stream_goes_first(db, catalog):
    state = {"currently_syncing": "public-pairs", "bookmarks": {}}
    messages = db.sync(only(catalog, "public-no_key", "public-pairs"), state=state)
    schemas = [m["stream"] for m in messages if m["type"] == "SCHEMA"]
    assert schemas == ["public-pairs", "public-no_key"]


def test_use_secondary_reads_from_the_secondary_host(db, catalog):
    from pgcluster import free_port

    config = dict(db.config, port=free_port(), use_secondary=True, secondary_host="127.0.0.1")
    config["secondary_port"] = db.server.port
    messages = db.sync(only(catalog, "public-no_key"), config=config)
    assert len(records_of(messages)) == 3


def test_sigterm_ends_with_the_last_state(db, catalog):
    process = db.start_sync(only(catalog, "public-items"), config=dict(db.config, itersize=200))
    lines = []
    for line in process.stdout:
        lines.append(json.loads(line))
        if lines[-1]["type"] == "STATE" and lines[-1]["value"]["bookmarks"]["public-items"].get("copied_blocks"):
            process.send_signal(signal.SIGTERM)
            break
    lines += [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=30) == 143  # 128 + SIGTERM
    assert lines[-1]["type"] == "STATE"
    assert lines[-1]["value"]["currently_syncing"] == "public-items"
    assert "Interrupted: writing the last STATE" in process.stderr.read().decode()
