"""INCREMENTAL: an inclusive bookmark in pipelinewise's layout, key order, batches, and `limit` without stalls."""

from __future__ import annotations

import json

import pytest
from conftest import records_of, select_all, states_of, without_origin


@pytest.fixture(scope="module")
def catalog(db):
    db.execute("CREATE TABLE events (id int PRIMARY KEY, updated_at timestamp, note text)")
    db.execute(
        "INSERT INTO events SELECT g, timestamp '2024-01-01' + g * interval '1 minute', 'n' || g "
        "FROM generate_series(1, 100) g"
    )
    db.execute("INSERT INTO events VALUES (101, NULL, 'no timestamp')")
    db.execute("CREATE TABLE crowded (id serial PRIMARY KEY, version int NOT NULL)")
    db.execute("INSERT INTO crowded (version) SELECT 1 FROM generate_series(1, 50)")
    db.execute("INSERT INTO crowded (version) SELECT 2 FROM generate_series(1, 5)")
    db.execute("CREATE TABLE people (name text PRIMARY KEY, amount numeric)")
    db.execute("INSERT INTO people VALUES ('Ann', 1.10), ('O''Brien', 2.000000000000000000001), ('Zoe', 3)")
    return db.discover()


def incremental(catalog: dict, stream_id: str, key: str) -> dict:
    return select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", key, only={stream_id})


def test_first_run_emits_every_row_in_key_order_with_pipelinewise_state(db, catalog):
    messages = db.sync(incremental(catalog, "public-events", "updated_at"), config=dict(db.config, itersize=30))
    ids = [r["id"] for r in records_of(messages)]
    assert ids == [*range(1, 101), 101]
    schema = next(m for m in messages if m["type"] == "SCHEMA")
    assert schema["bookmark_properties"] == ["updated_at"]
    bookmark = without_origin(states_of(messages)[-1])["bookmarks"]["public-events"]
    assert bookmark == {
        "last_replication_method": "INCREMENTAL",
        "replication_key": "updated_at",
        "replication_key_value": "2024-01-01T01:40:00+00:00",
        "version": bookmark["version"],
    }
    values = [s["bookmarks"]["public-events"].get("replication_key_value") for s in states_of(messages)]
    assert [v for v in values if v][:3] == [
        "2024-01-01T00:30:00+00:00",
        "2024-01-01T01:00:00+00:00",
        "2024-01-01T01:30:00+00:00",
    ]


def test_second_run_emits_only_rows_at_or_after_the_bookmark(db, catalog):
    chosen = incremental(catalog, "public-events", "updated_at")
    first = db.sync(chosen)
    db.execute("UPDATE events SET updated_at = '2024-06-01', note = 'changed' WHERE id = 3")
    try:
        second = db.sync(chosen, state=states_of(first)[-1])
    finally:
        db.execute("UPDATE events SET updated_at = timestamp '2024-01-01' + 3 * interval '1 minute' WHERE id = 3")
    assert [(r["id"], r["note"]) for r in records_of(second)] == [(100, "n100"), (3, "changed")]
    assert states_of(second)[-1]["bookmarks"]["public-events"]["replication_key_value"] == "2024-06-01T00:00:00+00:00"


def test_state_written_by_pipelinewise_is_accepted(db, catalog):
    state = {
        "currently_syncing": None,
        "bookmarks": {
            "public-events": {
                "last_replication_method": "INCREMENTAL",
                "replication_key": "updated_at",
                "replication_key_value": "2024-01-01T01:38:00+00:00",
                "version": 1700000000000,
            }
        },
    }
    messages = db.sync(incremental(catalog, "public-events", "updated_at"), state=state)
    assert [r["id"] for r in records_of(messages)] == [98, 99, 100]
    assert {m["version"] for m in messages if m["type"] == "RECORD"} == {1700000000000}


def test_limit_does_not_stall_when_more_rows_than_limit_share_a_key(db, catalog):
    chosen = incremental(catalog, "public-crowded", "version")
    config = dict(db.config, limit=10)
    first = db.sync(chosen, config=config)
    assert len(records_of(first)) == 50
    assert states_of(first)[-1]["bookmarks"]["public-crowded"]["replication_key_value"] == 1
    second = db.sync(chosen, state=states_of(first)[-1], config=config)
    assert states_of(second)[-1]["bookmarks"]["public-crowded"]["replication_key_value"] == 2
    assert {r["version"] for r in records_of(second)} == {1, 2}


def test_limit_caps_rows_per_run(db, catalog):
    messages = db.sync(incremental(catalog, "public-events", "id"), config=dict(db.config, limit=7))
    assert [r["id"] for r in records_of(messages)] == list(range(1, 8))


def test_changing_the_replication_key_resets_the_bookmark(db, catalog):
    by_time = db.sync(incremental(catalog, "public-events", "updated_at"))
    by_id = db.sync(incremental(catalog, "public-events", "id"), state=states_of(by_time)[-1])
    assert len(records_of(by_id)) == 101
    assert states_of(by_id)[-1]["bookmarks"]["public-events"]["replication_key"] == "id"


def test_switching_from_full_table_resets_the_bookmark(db, catalog):
    full = db.sync(select_all(json.loads(json.dumps(catalog)), only={"public-people"}))
    incr = db.sync(incremental(catalog, "public-people", "name"), state=states_of(full)[-1])
    assert len(records_of(incr)) == 3
    assert states_of(incr)[-1]["bookmarks"]["public-people"]["last_replication_method"] == "INCREMENTAL"


def test_text_and_numeric_bookmarks_are_bound_exactly(db, catalog):
    by_name = db.sync(
        incremental(catalog, "public-people", "name"),
        state={"bookmarks": {"public-people": {"replication_key": "name", "replication_key_value": "O'Brien"}}},
    )
    assert [r["name"] for r in records_of(by_name)] == ["O'Brien", "Zoe"]
    state_path = db.write_json("state.json", {})
    state_path.write_text(
        '{"bookmarks": {"public-people": {"replication_key": "amount", '
        '"replication_key_value": 2.000000000000000000001}}}'
    )
    catalog_path = db.write_json("catalog.json", incremental(catalog, "public-people", "amount"))
    lines, _, _ = db.run_tap("--catalog", str(catalog_path), "--state", str(state_path))
    assert [json.loads(line)["record"]["name"] for line in lines if '"RECORD"' in line] == ["O'Brien", "Zoe"]
    assert '"replication_key_value":3' in [line for line in lines if '"STATE"' in line][-1]


def test_missing_replication_key_is_a_catalog_error(db, catalog):
    chosen = select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", only={"public-events"})
    _, stderr, code = db.run_tap("--catalog", str(db.write_json("catalog.json", chosen)), check=False)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        'tap-postgres: error: stream "public-events" is INCREMENTAL but has no "replication-key" metadata: '
        "name the column"
    )


# Keys whose emitted value is not exact (NaN is null, dates are clamped, 24:00 is 00:00, a time zone
# is dropped, bit(1) is a boolean) or whose bound needs care (a type's minimum): (type, keys in order).
LOSSY_KEYS = [
    ("numeric", ["-1.5", "1", "'NaN'"]),
    ("double precision", ["'-Infinity'", "0", "'Infinity'", "'NaN'"]),
    ("date", ["'0044-03-15 BC'", "'2020-01-01'", "'5874897-12-31'", "'infinity'"]),
    ("timestamp", ["'-infinity'", "'2020-01-01 10:00'", "'10000-01-01'"]),
    ("time", ["'00:00'", "'10:00'", "'24:00:00'"]),
    ("timetz", ["'07:00+00'", "'03:00-05'", "'23:00-05'"]),
    ("bit(1)", ["B'0'", "B'1'"]),
    ("integer", ["-2147483648", "0", "2147483647"]),
    ("bigint", ["-9223372036854775808", "9223372036854775807"]),
]


@pytest.mark.parametrize(("key_type", "keys"), LOSSY_KEYS, ids=[key_type for key_type, _ in LOSSY_KEYS])
@pytest.mark.parametrize("itersize", [1, 20000])
def test_every_row_arrives_once_and_the_bookmark_reads_back_exactly(db, key_type, keys, itersize):
    table = "lossy_" + key_type.split("(")[0].replace(" ", "_") + f"_{itersize}"
    db.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, k {key_type})")
    db.execute(f"INSERT INTO {table} (k) VALUES " + ", ".join(f"({key})" for key in keys))
    catalog = incremental(db.discover(), f"public-{table}", "k")
    config = dict(db.config, itersize=itersize)
    first = db.sync(catalog, config=config)
    assert [r["id"] for r in records_of(first)] == list(range(1, len(keys) + 1))
    # the bookmark is the greatest key: a rerun emits exactly the rows that hold it again
    rerun = db.sync(catalog, state=states_of(first)[-1], config=config)
    assert [r["id"] for r in records_of(rerun)] == [len(keys)]


def test_key_of_a_domain_over_a_domain_over_an_enum_bounds_batches(db):
    # anyenum's operators do not resolve for a domain over an enum: keys compare as the base type
    db.execute(
        "CREATE TYPE size AS ENUM ('s', 'm', 'l'); CREATE DOMAIN size_d AS size; CREATE DOMAIN size_dd AS size_d"
    )
    db.execute("CREATE TABLE sized (k size_dd PRIMARY KEY, v int)")
    db.execute("INSERT INTO sized VALUES ('l', 3), ('s', 1), ('m', 2)")
    catalog = db.discover()
    config = dict(db.config, itersize=1)
    full_table = db.sync(select_all(json.loads(json.dumps(catalog)), only={"public-sized"}), config=config)
    # FULL_TABLE reads block ranges, in the table's physical order
    assert sorted(r["k"] for r in records_of(full_table)) == ["l", "m", "s"]
    first = db.sync(incremental(catalog, "public-sized", "k"), config=config)
    assert [r["k"] for r in records_of(first)] == ["s", "m", "l"]
    rerun = db.sync(incremental(catalog, "public-sized", "k"), state=states_of(first)[-1], config=config)
    assert [r["k"] for r in records_of(rerun)] == ["l"]
