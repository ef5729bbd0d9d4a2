"""LOG_BASED over wal2json: initial copy then changes in one run, no change lost, slot confirmed only as saved."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import TAP, records_of, select_all, states_of
from jsonschema import Draft4Validator, Draft202012Validator


@pytest.fixture(scope="module")
def slot(db):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric(10, 2), notes text)")
    db.execute("INSERT INTO orders SELECT g, 'new', g * 2.5, NULL FROM generate_series(1, 3) g")
    db.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO customers VALUES (1, 'ada')")
    db.execute("CREATE TABLE noise (id serial PRIMARY KEY, payload text)")
    return db.create_slot()


def log_based(db, *stream_ids: str) -> dict:
    return select_all(db.discover(), method="LOG_BASED", only=set(stream_ids))


def lsn_of(state: dict, stream_id: str) -> int:
    return state["bookmarks"][stream_id]["lsn"]


def confirmed_flush(db, slot: str) -> int:
    return db.query(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )[0][0]


def test_initial_copy_then_inserts_updates_and_deletes(db, slot):
    catalog = log_based(db, "public-orders")
    first = db.sync(catalog)
    assert [m["type"] for m in first][:3] == ["SCHEMA", "STATE", "ACTIVATE_VERSION"]
    assert [r["id"] for r in records_of(first)] == [1, 2, 3]
    state = states_of(first)[-1]
    version = state["bookmarks"]["public-orders"]["version"]
    # pgoutput's bookmark also records the table's membership in the publication
    membership = {"publication_membership"} if db.plugin == "pgoutput" else set()
    assert set(state["bookmarks"]["public-orders"]) == {
        "last_replication_method",
        "version",
        "lsn",
        "origin",
        "table_columns",  # the table's columns, to tell a rename from a drop next time
        *membership,
    }

    db.execute("INSERT INTO orders VALUES (4, 'new', 10, NULL)")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 2")
    db.execute("DELETE FROM orders WHERE id = 1")
    db.execute("UPDATE orders SET id = 30 WHERE id = 3")
    second = db.sync(catalog, state=state)

    assert not [m for m in second if m["type"] == "ACTIVATE_VERSION"]
    records = records_of(second)
    assert [(r["id"], r.get("status"), r["_sdc_deleted_at"] is not None) for r in records] == [
        (4, "new", False),
        (2, "paid", False),
        (1, None, True),
        (3, None, True),  # the key change deletes the old key first
        (30, "new", False),
    ]
    assert records[0] == {"id": 4, "status": "new", "amount": 10, "notes": None, "_sdc_deleted_at": None}
    # a delete carries the replica identity (the key) and nulls
    assert {name: value for name, value in records[2].items() if name != "_sdc_deleted_at"} == {
        "id": 1,
        "status": None,
        "amount": None,
        "notes": None,
    }
    assert records[2]["_sdc_deleted_at"].endswith("+00:00")
    assert {m["version"] for m in second if m["type"] == "RECORD"} == {version}
    schema = next(m for m in second if m["type"] == "SCHEMA")["schema"]
    assert schema["properties"]["_sdc_deleted_at"] == {"type": ["null", "string"], "format": "date-time"}
    assert lsn_of(states_of(second)[-1], "public-orders") > lsn_of(state, "public-orders")

    third = db.sync(catalog, state=states_of(second)[-1])
    assert records_of(third) == []


def test_bookmarks_move_while_the_selected_tables_are_idle(db, slot):
    catalog = log_based(db, "public-customers")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO noise (payload) SELECT 'x' FROM generate_series(1, 100)")
    later = db.sync(catalog, state=state)
    assert records_of(later) == []
    assert lsn_of(states_of(later)[-1], "public-customers") > lsn_of(state, "public-customers")


def test_slot_is_confirmed_only_up_to_the_incoming_state(db, slot):
    catalog = log_based(db, "public-customers")
    state = states_of(db.sync(catalog))[-1]
    saved = lsn_of(state, "public-customers")
    db.execute("INSERT INTO customers VALUES (2, 'grace')")
    second = db.sync(catalog, state=state)
    assert [r["name"] for r in records_of(second)] == ["grace"]
    # the run emitted changes past `saved`, but only what the state said the target has is released
    assert confirmed_flush(db, slot) == saved
    # a crash of the target before it saved `second`: the same state gives the same changes again
    again = db.sync(catalog, state=state)
    assert [r["name"] for r in records_of(again)] == ["grace"]
    db.sync(catalog, state=states_of(second)[-1])
    assert confirmed_flush(db, slot) == lsn_of(states_of(second)[-1], "public-customers")


def test_unchanged_toasted_value_is_not_emitted_as_null(db, slot):
    db.execute("CREATE TABLE documents (id int PRIMARY KEY, title text, body text)")
    # random hex does not compress, so the value is stored out of line (TOAST)
    db.execute(
        "INSERT INTO documents SELECT 1, 'draft', string_agg(md5(random()::text), '') FROM generate_series(1, 400)"
    )
    body = db.query("SELECT body FROM documents")[0][0]
    catalog = log_based(db, "public-documents")
    state = states_of(db.sync(catalog))[-1]
    db.execute("UPDATE documents SET title = 'final' WHERE id = 1")
    records = records_of(db.sync(catalog, state=state))
    assert [(r["title"], r["body"] == body) for r in records] == [("final", True)]


def test_a_column_added_between_runs_is_in_the_streams_schema(db, slot):
    db.execute("CREATE TABLE growing (id int PRIMARY KEY, a text)")
    catalog = log_based(db, "public-growing")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO growing VALUES (1, 'before')")
    db.execute("ALTER TABLE growing ADD COLUMN b integer")
    db.execute("INSERT INTO growing VALUES (2, 'after', 7)")
    messages = db.sync(catalog, state=state)
    kinds = [(m["type"], m.get("record", {}).get("id")) for m in messages if m["type"] in ("SCHEMA", "RECORD")]
    assert kinds == [("SCHEMA", None), ("RECORD", 1), ("RECORD", 2)]
    schema = next(m["schema"]["properties"] for m in messages if m["type"] == "SCHEMA")
    assert schema["b"] == {"type": ["null", "integer"], "minimum": -2147483648, "maximum": 2147483647}
    # the change from before the column existed takes its value from the row: null, as it was added
    assert records_of(messages) == [
        {"id": 1, "a": "before", "b": None, "_sdc_deleted_at": None},
        {"id": 2, "a": "after", "b": 7, "_sdc_deleted_at": None},
    ]


def test_a_deselected_column_stays_out_when_a_new_column_arrives(db, slot):
    """A new column made the tap widen the stream with every column the catalog did not select: a deselected
    `secret` (PII) was emitted from then on."""
    db.execute("CREATE TABLE people_cols (id int PRIMARY KEY, name text, secret text)")
    catalog = log_based(db, "public-people_cols")
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == ["properties", "secret"]:
                item["metadata"]["selected"] = False
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO people_cols VALUES (1, 'ann', 'hidden-1')")
    db.execute("ALTER TABLE people_cols ADD COLUMN extra int")
    db.execute("INSERT INTO people_cols VALUES (2, 'bob', 'hidden-2', 7)")
    messages = db.sync(catalog, state=state)
    assert [r.get("extra") for r in records_of(messages)] == [None, 7]
    assert all("secret" not in r for r in records_of(messages))
    assert all("secret" not in m["schema"]["properties"] for m in messages if m["type"] == "SCHEMA")


def test_truncate_is_a_new_table_version(db, slot):
    db.execute("CREATE TABLE scratch (id int PRIMARY KEY)")
    catalog = log_based(db, "public-scratch")
    state = states_of(db.sync(catalog))[-1]
    db.execute("TRUNCATE scratch")
    lines, stderr, _ = db.run_tap(
        "--catalog", str(db.write_json("catalog.json", catalog)), "--state", str(db.write_json("state.json", state))
    )
    assert "public-scratch was truncated" in stderr
    activations = [m for m in map(json.loads, lines) if m["type"] == "ACTIVATE_VERSION"]
    assert [m["version"] > state["bookmarks"]["public-scratch"]["version"] for m in activations] == [True]


def test_debug_lsn_adds_the_change_position(db, slot):
    catalog = log_based(db, "public-customers")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO customers VALUES (3, 'linus')")
    messages = db.sync(catalog, state=state, config=dict(db.config, debug_lsn=True))
    (record,) = records_of(messages)
    assert record["_sdc_lsn"] > lsn_of(state, "public-customers") - 1_000_000
    schema = next(m for m in messages if m["type"] == "SCHEMA")["schema"]
    assert schema["properties"]["_sdc_lsn"] == {"type": ["null", "integer"]}


def test_table_added_later_is_copied_once_and_keeps_its_own_bookmark(db, slot):
    db.execute("CREATE TABLE first_table (id int PRIMARY KEY)")
    db.execute("CREATE TABLE added_later (id int PRIMARY KEY)")
    db.execute("INSERT INTO added_later SELECT generate_series(1, 5)")
    one = log_based(db, "public-first_table")
    state = states_of(db.sync(one))[-1]

    both = log_based(db, "public-first_table", "public-added_later")
    second = db.sync(both, state=state)
    assert sorted(r["id"] for r in records_of(second, "public-added_later")) == [1, 2, 3, 4, 5]

    db.execute("INSERT INTO added_later VALUES (6)")
    third = db.sync(both, state=states_of(second)[-1])
    assert [r["id"] for r in records_of(third, "public-added_later")] == [6]
    assert not [m for m in third if m["type"] == "ACTIVATE_VERSION"]


def test_writes_during_the_initial_copy_are_not_lost(db, slot):
    db.execute("CREATE TABLE busy (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO busy SELECT g, 0 FROM generate_series(1, 30000) g")
    catalog = log_based(db, "public-busy")
    process = db.start_sync(catalog, config=dict(db.config, itersize=1000))
    messages = []
    for line in process.stdout:
        messages.append(json.loads(line))
        if messages[-1]["type"] == "STATE" and messages[-1]["value"]["bookmarks"]["public-busy"].get("copied_blocks"):
            break
    # the copy is under way: change rows it has passed and rows it has not reached, add new ones
    db.execute("UPDATE busy SET v = 1 WHERE id IN (1, 29999)")
    db.execute("INSERT INTO busy VALUES (30001, 2), (-1, 2)")
    db.execute("DELETE FROM busy WHERE id = 2")
    messages += [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=60) == 0, process.stderr.read().decode()

    final = {}
    for record in records_of(messages):
        final[record["id"]] = None if record.get("_sdc_deleted_at") else record["v"]
    assert final[1] == 1 and final[29999] == 1 and final[30001] == 2 and final[-1] == 2
    assert final[2] is None
    assert {key for key, value in final.items() if value is not None} == (set(range(-1, 30002)) - {0, 2})


def test_kill_mid_stream_then_rerun_loses_no_change(db, slot):
    db.execute("CREATE TABLE events (id int PRIMARY KEY, n int)")
    catalog = log_based(db, "public-events")
    state = states_of(db.sync(catalog))[-1]
    for batch in range(60):
        db.execute(f"INSERT INTO events SELECT g, g FROM generate_series({batch * 1000 + 1}, {(batch + 1) * 1000}) g")

    process = db.start_sync(catalog, config=db.config, state=state)
    first_run, last_state = [], state
    for line in process.stdout:
        first_run.append(json.loads(line))
        if first_run[-1]["type"] == "STATE" and first_run[-1]["value"] != state:
            last_state = first_run[-1]["value"]
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lsn_of(last_state, "public-events") > lsn_of(state, "public-events")

    second_run = db.sync(catalog, state=last_state)
    delivered = {r["id"] for r in records_of(first_run) + records_of(second_run)}
    assert delivered == set(range(1, 60001))


def test_sigterm_ends_with_the_last_state(db, slot):
    db.execute("CREATE TABLE ticks (id int PRIMARY KEY)")
    catalog = log_based(db, "public-ticks")
    state = states_of(db.sync(catalog))[-1]
    config = dict(db.config, break_at_end_lsn=False, logical_poll_total_seconds=600)
    process = db.start_sync(catalog, config=config, state=state)
    db.execute("INSERT INTO ticks VALUES (1)")
    lines = []
    for line in process.stdout:
        lines.append(json.loads(line))
        if lines[-1]["type"] == "RECORD":
            process.send_signal(signal.SIGTERM)
            break
    lines += [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=30) == 143  # 128 + SIGTERM
    assert lines[-1]["type"] == "STATE"
    assert lsn_of(lines[-1]["value"], "public-ticks") >= lsn_of(state, "public-ticks")


def test_without_break_at_end_lsn_the_run_stops_after_the_poll_time(db, slot):
    catalog = log_based(db, "public-customers")
    state = states_of(db.sync(catalog))[-1]
    config = dict(db.config, break_at_end_lsn=False, logical_poll_total_seconds=2)
    _, stderr, code = db.run_tap(
        "--catalog",
        str(db.write_json("catalog.json", catalog)),
        "--state",
        str(db.write_json("state.json", state)),
        config=config,
    )
    assert code == 0 and "logical_poll_total_seconds" in stderr


def test_missing_slot_is_a_one_line_error_with_the_sql_to_create_it(db, slot):
    catalog = log_based(db, "public-customers")
    config = dict(db.config, tap_id="Other-Pipeline", create_replication_slot=False)
    db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))  # pipelinewise_<dbname> would be used first
    try:
        lines, stderr, code = db.run_tap(
            "--catalog", str(db.write_json("catalog.json", catalog)), config=config, check=False
        )
    finally:
        db.create_slot(slot)
    missing = f"pipelinewise_{db.name}_other_pipeline"
    assert code == 1 and lines == []
    create_slot = f"SELECT pg_create_logical_replication_slot('{missing}', '{db.plugin}')"
    last = stderr.strip().splitlines()[-1]
    if db.plugin == "pgoutput":  # the publication comes first, then the slot
        assert last.startswith(
            f'tap-postgres: error: replication slot "{missing}" does not exist: create the publication first '
            f'(pgoutput reads it as of each change), then the slot: CREATE PUBLICATION "{missing}" FOR TABLE '
            '"public"."customers" WITH '
        )
        assert last.endswith(f'; then the slot: {create_slot}; or set "create_replication_slot": true')
        return
    assert last == (
        f'tap-postgres: error: replication slot "{missing}" does not exist: create it with {create_slot}; '
        'or set "create_replication_slot": true'
    )


def test_create_replication_slot_creates_the_tap_id_slot(db, slot):
    catalog = log_based(db, "public-customers")
    config = dict(db.config, tap_id="second", create_replication_slot=True)
    db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    try:
        messages = db.sync(catalog, config=config)
        names = [name for (name,) in db.query("SELECT slot_name FROM pg_replication_slots")]
    finally:
        db.drop_slots()
        db.create_slot(slot)
    assert names == [f"pipelinewise_{db.name}_second"]
    assert records_of(messages)


def test_million_row_transaction_streams_in_bounded_memory(db, slot):
    db.execute("CREATE TABLE bulk (id int PRIMARY KEY, label text, amount numeric(12, 2))")
    catalog = log_based(db, "public-bulk")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO bulk SELECT g, 'row ' || g, g / 100.0 FROM generate_series(1, 1000000) g")
    config_path = db.write_json("config.json", db.config)
    args = [*TAP, "--config", str(config_path), "--catalog", str(db.write_json("catalog.json", catalog))]
    args += ["--state", str(db.write_json("state.json", state))]
    output = db.tmp_dir / "bulk.jsonl"
    # a child of its own runs the tap, so RUSAGE_CHILDREN is the tap's peak RSS alone
    measure = (
        "import resource, subprocess, sys; "
        "out = open(sys.argv[1], 'wb'); "
        "code = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL).returncode; "
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(output), *args], capture_output=True, text=True, timeout=900
    )
    code, peak_kib = map(int, result.stdout.split())
    assert code == 0
    with open(output, "rb") as lines:
        records = sum(1 for line in lines if line.startswith(b'{"type":"RECORD"'))
    assert records == 1_000_000
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib / 1024:.0f} MB"


def test_copy_killed_after_its_first_state_still_streams_the_deletes_made_since(db, slot):
    # a target may save only the copy's first STATE (it commits what it has flushed): a rerun from
    # it must still delete the rows the partial copy delivered and that were deleted meanwhile
    db.execute("CREATE TABLE copied (id int PRIMARY KEY, v text)")
    db.execute("INSERT INTO copied SELECT g, 'x' FROM generate_series(1, 20000) g")
    catalog = log_based(db, "public-copied")
    process = db.start_sync(catalog, config=dict(db.config, itersize=500))
    first_state = None
    for line in process.stdout:
        message = json.loads(line)
        if message["type"] == "STATE" and "public-copied" in message["value"]["bookmarks"]:
            first_state = message["value"]
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert "lsn" in first_state["bookmarks"]["public-copied"]

    db.execute("DELETE FROM copied WHERE id <= 100")
    db.execute("UPDATE copied SET v = 'changed' WHERE id = 200")
    rerun = records_of(db.sync(catalog, state=first_state))
    final = {}
    for record in rerun:
        final[record["id"]] = None if record.get("_sdc_deleted_at") else record["v"]
    assert all(final[row_id] is None for row_id in range(1, 101))
    assert final[200] == "changed"
    assert {key for key, value in final.items() if value is not None} == set(range(101, 20001))


@pytest.fixture(scope="module")
def partitioned(db, slot):
    db.execute(
        "CREATE TABLE payment (id int, paid_on date, amount numeric(6, 2) NOT NULL, note text NOT NULL DEFAULT '', "
        "PRIMARY KEY (id, paid_on)) PARTITION BY RANGE (paid_on)"
    )
    db.execute("CREATE TABLE payment_2022 PARTITION OF payment FOR VALUES FROM ('2022-01-01') TO ('2023-01-01')")
    db.execute(
        "CREATE TABLE payment_2023 PARTITION OF payment FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') "
        "PARTITION BY RANGE (id)"
    )
    db.execute("CREATE TABLE payment_2023_low PARTITION OF payment_2023 FOR VALUES FROM (0) TO (1000)")
    db.execute("CREATE TABLE payment_2023_high PARTITION OF payment_2023 FOR VALUES FROM (1000) TO (MAXVALUE)")
    db.execute("INSERT INTO payment VALUES (1, '2022-05-01', 10), (2, '2023-05-01', 20), (1001, '2023-06-01', 30)")
    catalog = db.discover(dict(db.config, include_partitions=True))
    return select_all(catalog, method="LOG_BASED", only={"public-payment", "public-payment_2022"})


def test_partition_changes_arrive_under_the_partitioned_tables_stream(db, partitioned):
    state = states_of(db.sync(partitioned))[-1]
    # a partition attached after the slot was created, its columns in another order
    db.execute(
        "CREATE TABLE payment_2024 (note text NOT NULL DEFAULT '', amount numeric(6, 2) NOT NULL, paid_on date NOT NULL, id int NOT NULL)"
    )
    db.execute("ALTER TABLE payment ATTACH PARTITION payment_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    db.execute("INSERT INTO payment VALUES (3, '2024-02-01', 40)")
    db.execute("UPDATE payment SET amount = 11 WHERE id = 1")
    db.execute("DELETE FROM payment WHERE id = 1001")
    db.execute("UPDATE payment SET paid_on = '2024-03-01' WHERE id = 2")  # moves to another partition
    messages = db.sync(partitioned, state=state)

    changes = [
        (r["id"], r["paid_on"][:10] if r["paid_on"] else None, r["amount"], r["_sdc_deleted_at"] is not None)
        for r in records_of(messages, "public-payment")
    ]
    assert changes == [
        (3, "2024-02-01", 40, False),
        (1, "2022-05-01", 11, False),
        (1001, "2023-06-01", None, True),
        (2, "2023-05-01", None, True),
        (2, "2024-03-01", 20, False),
    ]
    # the leaf partition selected as a stream of its own gets its own changes too
    assert [(r["id"], r["amount"]) for r in records_of(messages, "public-payment_2022")] == [(1, 11)]


@pytest.mark.parametrize("validator", [Draft4Validator, Draft202012Validator], ids=["draft4", "2020-12"])
def test_every_log_based_record_validates_against_its_schema(db, partitioned, validator):
    # deletes carry only the key: NOT NULL columns (amount, note) are null in them
    state = states_of(db.sync(partitioned))[-1]
    db.execute("INSERT INTO payment VALUES (5, '2022-07-01', 50)")
    db.execute("DELETE FROM payment WHERE id = 5")
    messages = db.sync(partitioned, state=state)
    schemas = {m["stream"]: m["schema"] for m in messages if m["type"] == "SCHEMA"}
    records = [m for m in messages if m["type"] == "RECORD"]
    assert any(m["record"]["_sdc_deleted_at"] for m in records)
    for message in records:
        assert list(validator(schemas[message["stream"]]).iter_errors(message["record"])) == []


def test_log_based_foreign_table_is_a_one_line_error_before_any_copy(db, slot):
    db.execute("CREATE FOREIGN DATA WRAPPER nowhere; CREATE SERVER elsewhere FOREIGN DATA WRAPPER nowhere")
    db.execute("CREATE FOREIGN TABLE remote_orders (id int) SERVER elsewhere")
    catalog = log_based(db, "public-remote_orders", "public-customers")
    lines, stderr, code = db.run_tap("--catalog", str(db.write_json("catalog.json", catalog)), check=False)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "tap-postgres: error: public-remote_orders is a foreign table, whose rows have no WAL of their own: "
        "LOG_BASED cannot replicate it; set its replication-method to FULL_TABLE or INCREMENTAL"
    )
    assert not [line for line in lines if '"RECORD"' in line]


def test_delete_of_a_row_with_a_not_null_domain_column(db, slot):
    # a delete has nulls where the domain allows none: its values are read as the base type
    db.execute("CREATE DOMAIN required_int AS integer NOT NULL")
    db.execute("CREATE TABLE strict_rows (id int PRIMARY KEY, n required_int)")
    db.execute("INSERT INTO strict_rows VALUES (1, 10)")
    catalog = log_based(db, "public-strict_rows")
    state = states_of(db.sync(catalog))[-1]
    db.execute("DELETE FROM strict_rows WHERE id = 1")
    (record,) = records_of(db.sync(catalog, state=state))
    assert record["id"] == 1 and record["n"] is None and record["_sdc_deleted_at"]


def test_every_run_logs_slot_health_and_warns_above_the_lag_threshold(db, slot):
    catalog = log_based(db, "public-customers")
    state = states_of(db.sync(catalog))[-1]
    db.execute("INSERT INTO noise (payload) SELECT repeat('x', 1000) FROM generate_series(1, 100)")
    config = dict(db.config, slot_lag_warning_bytes=50000)
    args = [
        "--catalog",
        str(db.write_json("catalog.json", catalog)),
        "--state",
        str(db.write_json("state.json", state)),
    ]
    _, stderr, _ = db.run_tap(*args, config=config)
    start = next(line for line in stderr.splitlines() if "slot_health when=start" in line)
    assert f"slot={slot} " in start and "wal_status=reserved" in start and "safe_wal_size=unlimited" in start
    lag = int(start.split("lag_bytes=")[1].split()[0])
    assert lag > 100000  # the 100 kB the noise wrote since the state's position
    assert f"slot_lag_exceeded slot={slot} lag_bytes={lag} threshold_bytes=50000" in stderr
    assert "slot_health when=end" in stderr
