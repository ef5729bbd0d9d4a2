"""pgoutput: the publication the tap keeps, what it refuses, the 2026 plugin allowlist, and moving a
wal2json pipeline to pgoutput without a new initial copy, without losing or duplicating a change.

(Every LOG_BASED behaviour is also run through pgoutput by test_log_based_pgoutput.py.)
"""

from __future__ import annotations

import copy
import time

import pytest
from conftest import records_of, select_all, states_of

from tap_postgres.publication import marker_statement


@pytest.fixture(scope="module")
def tables(db):
    db.execute("CREATE TABLE pets (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO pets VALUES (1, 'rex')")
    db.execute("CREATE TABLE toys (id int PRIMARY KEY, name text)")
    db.execute("CREATE TABLE keyless (name text)")
    return db.discover()


def log_based(catalog: dict, *stream_ids: str) -> dict:
    return select_all(copy.deepcopy(catalog), method="LOG_BASED", only=set(stream_ids))


def pipelinewise_config(db) -> dict:
    """The database's config as pipelinewise writes it: no output_plugin, no create_replication_slot
    (db.config has both where the server has no wal2json)."""
    return {key: value for key, value in db.config.items() if key not in ("output_plugin", "create_replication_slot")}


def published(db, name: str) -> set[str]:
    rows = db.query(
        "SELECT n.nspname || '.' || c.relname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
        "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s",
        (name,),
    )
    return {row[0] for row in rows}


@pytest.fixture
def pgoutput_slot(db, tables):
    """A pgoutput slot made by the tap itself (create_replication_slot), dropped afterwards with its publication."""
    db.plugin = "pgoutput"
    try:
        yield f"pipelinewise_{db.name}"
    finally:
        db.drop_slots()
        db.execute(f'DROP PUBLICATION IF EXISTS "pipelinewise_{db.name}"')
        db.plugin = db.default_plugin


def test_a_table_leaves_the_publication_only_when_its_bookmark_leaves_the_state(db, tables, pgoutput_slot):
    both = log_based(tables, "public-pets", "public-toys")
    state = states_of(db.sync(both))[-1]
    assert published(db, pgoutput_slot) == {"public.pets", "public.toys"}
    # a partial catalog: toys is not selected, but its bookmark is in the state, so it stays
    db.execute("INSERT INTO pets VALUES (2, 'tom')")
    db.execute("INSERT INTO toys VALUES (1, 'ball')")
    messages, stderr, code = db.try_sync(log_based(tables, "public-pets"), state=state)
    assert code == 0 and published(db, pgoutput_slot) == {"public.pets", "public.toys"}
    assert any("public-toys is not selected but the state holds its LOG_BASED bookmark" in line for line in stderr)
    assert [r["name"] for r in records_of(messages)] == ["tom"]
    state = states_of(messages)[-1]
    db.execute("INSERT INTO toys VALUES (2, 'kite')")
    # the full catalog again: every change toys had meanwhile arrives
    messages = db.sync(both, state=state)
    assert [r["name"] for r in records_of(messages, "public-toys")] == ["ball", "kite"]
    assert {r["id"] for r in records_of(messages, "public-toys")} == {row[0] for row in db.query("SELECT id FROM toys")}
    # toys leaves the pipeline for good: its bookmark is removed, then it leaves the publication
    state = states_of(messages)[-1]
    del state["bookmarks"]["public-toys"]
    db.sync(log_based(tables, "public-pets"), state=state)
    assert published(db, pgoutput_slot) == {"public.pets"}
    db.execute("DELETE FROM pets WHERE id = 2")
    db.execute("DELETE FROM toys")


def test_without_create_replication_slot_the_error_names_the_statement(db, tables, pgoutput_slot):
    db.execute(f'CREATE PUBLICATION "{pgoutput_slot}"')
    db.execute(marker_statement(pgoutput_slot, pgoutput_slot, None))  # the tap's own, made by an earlier run
    db.create_slot()
    config = dict(db.config, create_replication_slot=False)
    messages, stderr, code = db.try_sync(log_based(tables, "public-pets"), config=config)
    assert code == 1 and not records_of(messages)
    # on 18 the tap's publication also publishes stored generated columns, which the hand-made one lacks
    generated = (
        f"; ALTER PUBLICATION \"{pgoutput_slot}\" SET (publish = 'insert, update, delete, truncate', "
        "publish_via_partition_root = false, publish_generated_columns = stored)"
        if db.conn.server_version >= 180000
        else ""
    )
    assert stderr[-1] == (
        f'tap-postgres: error: publication "{pgoutput_slot}" does not hold the LOG_BASED tables: run '
        f'ALTER PUBLICATION "{pgoutput_slot}" ADD TABLE "public"."pets"{generated} '
        '(or set "create_replication_slot": true to let the tap do it)'
    )


def test_a_table_without_replica_identity_is_refused_and_never_published(db, tables, pgoutput_slot):
    messages, stderr, code = db.try_sync(log_based(tables, "public-keyless", "public-pets"))
    assert code == 1 and not records_of(messages)
    assert stderr[-1].startswith(
        'tap-postgres: error: "public"."keyless" has no replica identity (no primary key): in a publication the '
        "server would reject its UPDATEs and DELETEs"
    )
    assert published(db, pgoutput_slot) == set()
    db.execute("INSERT INTO keyless VALUES ('still writable')")


@pytest.mark.wal2json
def test_output_plugin_that_differs_from_the_slots_is_one_line(db, tables):
    db.create_slot()  # wal2json, as pipelinewise made it
    try:
        config = dict(db.config, output_plugin="pgoutput")
        messages, stderr, code = db.try_sync(log_based(tables, "public-pets"), config=config)
    finally:
        db.drop_slots()
    assert code == 1
    assert stderr[-1] == (
        f'tap-postgres: error: replication slot "pipelinewise_{db.name}" uses wal2json, output_plugin is pgoutput: '
        "leave output_plugin unset to go on with wal2json, or move the pipeline to pgoutput as the README's "
        '"Moving from wal2json to pgoutput" says'
    )


def set_allowlist(db, statement: str, expected: str) -> None:
    db.execute(statement)
    db.execute("SELECT pg_reload_conf()")
    for _ in range(100):  # the reload reaches sessions asynchronously
        if db.query("SHOW output_plugin_libraries")[0][0] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"output_plugin_libraries did not become {expected!r}")


@pytest.fixture
def default_allowlist(db):
    """The server as the August 2026 minor releases ship it: only pgoutput and test_decoding are allowed."""
    if not db.query("SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries'"):
        pytest.skip("this server predates output_plugin_libraries")
    ours = db.query("SHOW output_plugin_libraries")[0][0]
    set_allowlist(
        db, "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding'", "pgoutput, test_decoding"
    )
    try:
        yield
    finally:
        set_allowlist(db, "ALTER SYSTEM RESET output_plugin_libraries", ours)


def test_with_the_default_allowlist_pgoutput_works_and_wal2json_says_what_to_do(db, tables, default_allowlist):
    catalog = log_based(tables, "public-pets")
    config = dict(db.config, create_replication_slot=True, output_plugin="wal2json")
    try:
        messages, stderr, code = db.try_sync(catalog, config=config)
        assert code == 1
        assert "the server does not allow the wal2json plugin: add it to output_plugin_libraries" in stderr[-1]
        assert "or move the pipeline to pgoutput, which is always allowed" in stderr[-1]
    finally:
        db.drop_slots()
    db.plugin = "pgoutput"
    try:
        state = states_of(db.sync(catalog))[-1]
        db.execute("INSERT INTO pets VALUES (3, 'felix')")
        assert [r["name"] for r in records_of(db.sync(catalog, state=state))] == ["felix"]
    finally:
        db.drop_slots()
        db.execute(f'DROP PUBLICATION IF EXISTS "pipelinewise_{db.name}"')
        db.execute("DELETE FROM pets WHERE id = 3")
        db.plugin = db.default_plugin


@pytest.mark.wal2json
def test_moving_a_wal2json_pipeline_to_pgoutput_loses_and_repeats_nothing(db, tables):
    """The README's procedure, step by step, with writes between every step."""
    slot = f"pipelinewise_{db.name}"
    catalog = log_based(tables, "public-toys")
    db.create_slot()  # the pipeline as it runs today, on wal2json
    try:
        state = states_of(db.sync(catalog))[-1]
        db.execute("INSERT INTO toys VALUES (1, 'before the move')")
        # 1. create the publication (the tap does it itself when create_replication_slot is true)
        db.execute(f'CREATE PUBLICATION "{slot}" FOR TABLE toys')
        db.execute("INSERT INTO toys VALUES (2, 'after the publication')")
        # 2. one more run on wal2json: its state is past the publication's creation
        moved = db.sync(catalog, state=state)
        assert [r["name"] for r in records_of(moved)] == ["before the move", "after the publication"]
        state = states_of(moved)[-1]
        db.execute("INSERT INTO toys VALUES (3, 'during the move')")
        # 3. the same slot, position and name on pgoutput: copy it aside, drop it, copy it back
        db.execute(f"SELECT pg_copy_logical_replication_slot('{slot}', '{slot}_moving', false, 'pgoutput')")
        db.execute(f"SELECT pg_drop_replication_slot('{slot}')")
        db.execute(f"SELECT pg_copy_logical_replication_slot('{slot}_moving', '{slot}', false, 'pgoutput')")
        db.execute(f"SELECT pg_drop_replication_slot('{slot}_moving')")
        db.execute("INSERT INTO toys VALUES (4, 'after the move')")
        # 4. the next run reads pgoutput from the saved state: every change after it, once
        db.plugin = "pgoutput"
        after = db.sync(catalog, state=state)
        assert [r["name"] for r in records_of(after)] == ["during the move", "after the move"]
        assert "Creating replication slot" not in str(after)
    finally:
        db.drop_slots()
        db.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
        db.plugin = db.default_plugin


def assert_a_first_pipeline_chooses_pgoutput(db, tables, reason: str) -> None:
    """A pipelinewise config (output_plugin unset) with no slot yet: the run makes a pgoutput slot, logs
    `reason`, and the slot's plugin decides from then on."""
    catalog = log_based(tables, "public-pets")
    config = dict(pipelinewise_config(db), create_replication_slot=True)  # output_plugin unset, no slot yet
    slot = f"pipelinewise_{db.name}"
    try:
        messages, stderr, code = db.try_sync(catalog, config=config)
        assert code == 0, stderr
        assert any(reason in line for line in stderr)
        assert db.query("SELECT plugin FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == [("pgoutput",)]
        db.execute("INSERT INTO pets VALUES (5, 'kit')")
        later = db.sync(catalog, state=states_of(messages)[-1], config=config)
        assert [r["name"] for r in records_of(later)] == ["kit"]
    finally:
        db.drop_slots()
        db.execute(f'DROP PUBLICATION IF EXISTS "{slot}"')
        db.execute("DELETE FROM pets WHERE id = 5")


def test_a_first_pipeline_on_a_default_server_chooses_pgoutput_and_says_why(db, tables, default_allowlist):
    assert_a_first_pipeline_chooses_pgoutput(
        db,
        tables,
        "output_plugin is unset and there is no slot yet: using pgoutput, as the server's "
        "output_plugin_libraries (pgoutput, test_decoding) does not allow wal2json",
    )


def test_a_first_pipeline_on_a_server_without_wal2json_chooses_pgoutput_and_says_why(db, tables):
    """A server may allow wal2json (no allowlist before 2026's minors) and still not have it installed."""
    if db.server.has_wal2json:
        pytest.skip("this server has wal2json (the pinned builds of make test-versions do not)")
    assert_a_first_pipeline_chooses_pgoutput(db, tables, "using pgoutput, as wal2json is not installed on the server")


def test_a_missing_slot_names_the_publication_first_then_the_slot(db, tables, default_allowlist):
    slot = f"pipelinewise_{db.name}"
    messages, stderr, code = db.try_sync(log_based(tables, "public-pets"), config=pipelinewise_config(db))
    assert code == 1 and not records_of(messages)
    generated = ", publish_generated_columns = stored" if db.server.version_num >= 180000 else ""
    assert stderr[-1] == (
        f'tap-postgres: error: replication slot "{slot}" does not exist: create the publication first (pgoutput '
        f'reads it as of each change), then the slot: CREATE PUBLICATION "{slot}" FOR TABLE "public"."pets" WITH '
        f"(publish = 'insert, update, delete, truncate', publish_via_partition_root = false{generated}); "
        "COMMENT ON PUBLICATION "
        f'"{slot}" IS \'Managed by tap-postgres, do not edit this comment: {{"slot": "{slot}", "tap_id": null}}\'; '
        f"then the slot: SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput'); or set "
        '"create_replication_slot": true'
    )
    assert not db.query("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,))


def test_a_publication_younger_than_the_slot_gets_its_cause_and_a_way_out_that_loses_nothing(db, tables, pgoutput_slot):
    catalog = log_based(tables, "public-toys")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO toys VALUES (10, 'before the new publication')")
    # publication_name switched to a publication made after the slot
    db.execute("CREATE PUBLICATION late_pub FOR TABLE toys")
    config = dict(db.config, publication_name="late_pub")
    db.execute("INSERT INTO toys VALUES (11, 'after it')")
    for _ in range(2):  # the same on every run: the cause, never "rerun"
        messages, stderr, code = db.try_sync(catalog, state=state, config=config)
        assert code == 1 and not records_of(messages)
        assert "the publication is younger than the slot" in stderr[-1], stderr[-1]
        assert f"run SELECT pg_drop_replication_slot('{pgoutput_slot}'), then rerun" in stderr[-1]
    # the way out, as the line says, with a write in between
    db.execute(f"SELECT pg_drop_replication_slot('{pgoutput_slot}')")
    db.execute("INSERT INTO toys VALUES (12, 'after the slot was dropped')")
    fresh = {**state, "bookmarks": {}}
    messages = db.sync(catalog, state=fresh, config=config)
    old_version = state["bookmarks"]["public-toys"]["version"]
    copied = [m for m in messages if m["type"] == "RECORD"]
    assert {m["version"] for m in copied} != {old_version}
    db.execute("INSERT INTO toys VALUES (13, 'after the way out')")
    later = records_of(db.sync(catalog, state=states_of(messages)[-1], config=config))
    emitted = {r["id"] for r in records_of(messages)} | {r["id"] for r in later}
    assert emitted == {row[0] for row in db.query("SELECT id FROM toys")}
    assert any(m["type"] == "ACTIVATE_VERSION" for m in messages)
    db.execute("DELETE FROM toys WHERE id >= 10")
    db.drop_slots()
    db.execute("DROP PUBLICATION late_pub")


def test_a_dropped_log_based_table_gets_the_rerun_discover_line(db, tables, pgoutput_slot):
    db.execute("CREATE TABLE doomed (id int PRIMARY KEY)")
    catalog = log_based(db.discover(), "public-doomed", "public-pets")
    state = states_of(db.sync(catalog))[-1]
    db.execute("DROP TABLE doomed")
    messages, stderr, code = db.try_sync(catalog, state=state)
    assert code == 1 and not records_of(messages)
    assert stderr[-1] == (
        'tap-postgres: error: table "public"."doomed" of stream public-doomed no longer exists: rerun --discover '
        "and update the catalog"
    )


def test_a_run_refused_for_any_stream_touches_no_publication_or_slot(db, tables, pgoutput_slot):
    """Every stream's checks run before the publication DDL: a bad INCREMENTAL bookmark refuses the run first."""
    catalog = log_based(tables, "public-pets")
    incremental = select_all(copy.deepcopy(tables), "INCREMENTAL", "id", only={"public-toys"})
    catalog["streams"] += incremental["streams"]
    state = {"bookmarks": {"public-toys": {"replication_key": "id", "replication_key_value": "not a number"}}}
    messages, stderr, code = db.try_sync(catalog, state=state)
    assert code == 1 and "does not fit" in stderr[-1], stderr
    assert not records_of(messages)
    assert not db.query("SELECT 1 FROM pg_publication WHERE pubname = %s", (pgoutput_slot,))
    assert not db.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (pgoutput_slot,))


def test_a_table_out_of_the_publication_for_a_while_is_copied_anew_under_a_new_version(db, tables, pgoutput_slot):
    """pgoutput skips for good what changed while a table was out: the bookmark's token shows it, and a copy replaces it."""
    catalog = log_based(tables, "public-pets")
    first = db.sync(catalog)
    version = states_of(first)[-1]["bookmarks"]["public-pets"]["version"]
    db.execute("INSERT INTO pets VALUES (10, 'in')")
    db.execute(f'ALTER PUBLICATION "{pgoutput_slot}" DROP TABLE pets')  # by hand, say
    db.execute("INSERT INTO pets VALUES (11, 'while out')")
    db.execute(f'ALTER PUBLICATION "{pgoutput_slot}" ADD TABLE pets')
    messages, stderr, code = db.try_sync(catalog, state=states_of(first)[-1])
    assert code == 0, stderr
    assert any("left publication" in line and "copying it anew" in line for line in stderr)
    copied = {r["id"]: r["name"] for r in records_of(messages)}
    assert copied[11] == "while out" and set(copied) >= {1, 10, 11}
    activations = [m["version"] for m in messages if m["type"] == "ACTIVATE_VERSION"]
    assert activations and activations[-1] > version
    assert all(m["version"] == activations[-1] for m in messages if m["type"] == "RECORD")
    # the next run streams on: the token is the one recorded now
    db.execute("INSERT INTO pets VALUES (12, 'after')")
    messages, stderr, code = db.try_sync(catalog, state=states_of(messages)[-1])
    assert code == 0 and not any("left publication" in line for line in stderr)
    assert [r["name"] for r in records_of(messages)] == ["after"]
    db.execute("DELETE FROM pets WHERE id >= 10")
