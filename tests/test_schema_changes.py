"""Schema changes between LOG_BASED runs: whatever changed, the target ends equal to the source.

Each test changes a table's rows and its columns between two runs, then applies the second run's
messages to the first run's result the way a target does (upsert by key, a deleted row removed,
ACTIVATE_VERSION dropping the rows of older versions) and compares with the table as the server
says it is. Through wal2json and pgoutput. The real targets' version of this is the DDL state
machine (tests/test_ddl_machine.py).
"""

from __future__ import annotations

import copy
import decimal
import json

import pytest
from conftest import records_of, select_all, states_of


@pytest.fixture(scope="module", params=["wal2json", "pgoutput"])
def plugin(db, request):
    if request.param == "wal2json" and not db.server.has_wal2json:
        pytest.skip("needs wal2json, which only Debian's 15 here has (make test runs it there)")
    db.plugin = request.param
    db.create_slot()
    yield request.param
    db.drop_slots()
    for (name,) in db.query("SELECT pubname FROM pg_publication"):
        db.execute(f'DROP PUBLICATION "{name}"')


@pytest.fixture
def table(db, plugin):
    """A keyed table of 40 rows, some values long enough to be stored out of line (TOAST)."""
    db.execute(
        "CREATE TABLE t (id int PRIMARY KEY, c numeric(5,2), n int, body text);"
        "INSERT INTO t SELECT i, i / 4.0, i, CASE WHEN i % 5 = 0 THEN "
        "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300)) ELSE 'b' || i END "
        "FROM generate_series(1, 40) AS i"
    )
    yield "public-t"
    db.execute("DROP TABLE IF EXISTS t, t_renamed")


class Target:
    """The rows a target holds after applying a tap's messages: upserts by key, deletes, table versions."""

    def __init__(self, key: str = "id"):
        self.key = key
        self.rows: dict = {}
        self.versions: dict = {}

    def apply(self, messages: list[dict]) -> None:
        for message in messages:
            if message["type"] == "RECORD":
                record = message["record"]
                if record.get("_sdc_deleted_at"):
                    self.rows.pop(record[self.key], None)
                    continue
                row = self.rows.setdefault(record[self.key], {})
                row.update({name: value for name, value in record.items() if name != "_sdc_deleted_at"})
                self.versions[record[self.key]] = message.get("version")
            elif message["type"] == "ACTIVATE_VERSION":
                for key in [key for key, version in self.versions.items() if version != message["version"]]:
                    self.rows.pop(key, None)
                    del self.versions[key]

    def equals_source(self, db, table: str = "t") -> None:
        source = {
            row[self.key]: row
            for (text,) in db.query(f"SELECT row_to_json(t)::text FROM {table} AS t")
            for row in [json.loads(text, parse_float=decimal.Decimal)]
        }
        assert sorted(self.rows) == sorted(source)
        for key, row in source.items():
            held = {name: self.rows[key].get(name) for name in row}
            assert held == row, f"row {key}: target {held}, source {row}"


def log_based(catalog: dict, stream: str) -> dict:
    return select_all(copy.deepcopy(catalog), method="LOG_BASED", only={stream})


def first_run(db, stream: str) -> tuple[dict, dict, Target]:
    """Discover, copy the table: the catalog, the state the target saved and the target's rows."""
    catalog = log_based(db.discover(), stream)
    target = Target()
    messages = db.sync(catalog)
    target.apply(messages)
    return catalog, states_of(messages)[-1], target


def float_parsed(messages: list[dict]) -> list[dict]:
    """The messages with their numbers as Decimal, as a target reads them."""
    return json.loads(json.dumps(messages), parse_float=decimal.Decimal)


def test_changes_written_before_a_rename_keep_the_renamed_columns_values(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET c = 1.5, n = n + 100 WHERE id <= 10")  # written while the column is called c
    db.execute("UPDATE t SET n = n + 1 WHERE id = 5")  # a TOASTed body left out of the change
    db.execute("DELETE FROM t WHERE id = 3")
    db.execute("INSERT INTO t VALUES (41, 2.25, 41, 'new')")
    db.execute("ALTER TABLE t RENAME c TO c2")
    db.execute("UPDATE t SET c2 = 7.75 WHERE id = 2")

    # the catalog still names c: the run stops before anything, naming the way on
    messages, stderr, code = db.try_sync(catalog, state=state)
    assert code == 1 and len(stderr) == 1 and "rerun --discover" in stderr[0], stderr
    assert not records_of(messages)

    catalog = log_based(db.discover(), table)
    messages, stderr, code = db.try_sync(catalog, state=state)
    assert code == 0, stderr
    assert any('column "c" was renamed to "c2"' in line for line in stderr)
    target.apply(float_parsed(messages))
    target.equals_source(db)  # c2 holds every row's value: none was nulled by a change from before

    # and the next run reads on from where this one ended, copying nothing
    db.execute("UPDATE t SET c2 = 8.5 WHERE id = 7")
    again = db.sync(catalog, state=states_of(messages)[-1])
    assert [r["id"] for r in records_of(again)] == [7]
    target.apply(float_parsed(again))
    target.equals_source(db)


def test_a_column_added_with_a_default_reaches_every_row(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET n = -n WHERE id <= 5")
    db.execute("ALTER TABLE t ADD COLUMN flag text DEFAULT 'on'")  # every row has it: the WAL never says so
    db.execute("UPDATE t SET flag = 'off' WHERE id = 6")
    messages = float_parsed(db.sync(catalog, state=state))  # no rediscovery: the new column joins the stream
    schema = [m for m in messages if m["type"] == "SCHEMA"][-1]
    assert "flag" in schema["schema"]["properties"]
    target.apply(messages)
    target.equals_source(db)


def test_a_column_added_empty_and_a_dropped_one_need_no_copy(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET n = 0 WHERE id = 1")  # carries c and body, dropped below
    db.execute("ALTER TABLE t ADD COLUMN note text")
    db.execute("UPDATE t SET note = 'x' WHERE id = 2")
    db.execute("ALTER TABLE t DROP COLUMN c")
    db.execute("UPDATE t SET note = 'y', n = 9 WHERE id = 4")
    catalog = log_based(db.discover(), table)
    messages = float_parsed(db.sync(catalog, state=state))
    assert sorted({r["id"] for r in records_of(messages)}) == [1, 2, 4]  # changes only: no copy
    target.apply(messages)
    target.equals_source(db)


def test_a_retyped_column_gets_its_new_schema_and_values(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET n = 7 WHERE id = 1")  # written as an int
    db.execute("ALTER TABLE t ALTER COLUMN n TYPE bigint, ALTER COLUMN c TYPE numeric(10,3)")
    db.execute("UPDATE t SET n = 9000000000, c = 1234567.125 WHERE id = 2")
    messages = float_parsed(db.sync(catalog, state=state))  # the catalog still says integer and numeric(5,2)
    properties = [m for m in messages if m["type"] == "SCHEMA"][-1]["schema"]["properties"]
    assert properties["n"]["maximum"] == 2**63 - 1
    assert properties["c"]["maximum"] == decimal.Decimal("9999999.999")
    target.apply(messages)
    target.equals_source(db)


def test_a_truncate_starts_a_new_table_version(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET n = 1 WHERE id = 1")
    db.execute(
        "BEGIN; INSERT INTO t VALUES (50, 1, 50, 'x'); TRUNCATE t; INSERT INTO t VALUES (51, 1, 51, 'y'); COMMIT"
    )
    db.execute("INSERT INTO t VALUES (52, 2, 52, 'z')")
    messages = float_parsed(db.sync(catalog, state=state))
    activations = [m for m in messages if m["type"] == "ACTIVATE_VERSION"]
    assert len(activations) == 1
    new = activations[0]["version"]
    assert [(r["record"]["id"], r["version"] == new) for r in messages if r["type"] == "RECORD"] == [
        (1, False),
        (50, False),
        (51, True),
        (52, True),
    ]
    assert states_of(messages)[-1]["bookmarks"][table]["version"] == new
    target.apply(messages)
    target.equals_source(db)


def test_a_renamed_key_column_copies_the_stream_anew(db, table):
    catalog, state, target = first_run(db, table)
    db.execute("UPDATE t SET n = 5 WHERE id = 1")
    db.execute("ALTER TABLE t RENAME id TO ident")
    db.execute("UPDATE t SET n = 6 WHERE ident = 2")
    catalog = log_based(db.discover(), table)
    messages, stderr, code = db.try_sync(catalog, state=state)
    assert code == 0, stderr
    assert any("copying it anew" in line for line in stderr)
    fresh = Target(key="ident")
    fresh.apply(float_parsed(messages))
    fresh.equals_source(db)


def test_a_rename_while_changes_are_read_ends_the_run_and_the_next_copies_again(db, table):
    catalog, state, target = first_run(db, table)
    config = {**db.config, "break_at_end_lsn": False, "logical_poll_total_seconds": 20, "max_run_seconds": 90}
    tap = db.start_sync(catalog, config, state)
    stderr: list[str] = []
    while not any("Reading slot" in line for line in stderr) and tap.poll() is None:
        stderr.append(tap.stderr.readline().decode())
    db.execute("UPDATE t SET n = 1 WHERE id = 1")
    db.execute("ALTER TABLE t ADD COLUMN x int")  # read while streaming: a SCHEMA with x follows
    db.execute("INSERT INTO t VALUES (60, 1, 60, 'x', 6)")
    db.execute("ALTER TABLE t RENAME c TO c2")
    db.execute("UPDATE t SET c2 = 3.5 WHERE id = 2")  # its names tell the tap: the run ends after it
    db.execute("UPDATE t SET n = 3 WHERE id = 3")
    output, rest = tap.communicate(timeout=120)
    stderr += rest.decode().splitlines()
    assert tap.returncode == 0, "".join(stderr)
    assert any("ending the run here" in line for line in stderr), "".join(stderr)
    messages = float_parsed([json.loads(line) for line in output.decode().splitlines()])
    schemas = [m["schema"]["properties"] for m in messages if m["type"] == "SCHEMA"]
    assert "x" not in schemas[0] and "x" in schemas[-1]
    assert records_of(messages)[1]["x"] == 6
    # the table is described as it is when a change shows new names: the rename may be seen at 60 already
    assert [r["id"] for r in records_of(messages)] in ([1, 60], [1, 60, 2])  # never the change after them
    target.apply(messages)

    catalog = log_based(db.discover(), table)
    messages = float_parsed(db.sync(catalog, state=states_of(messages)[-1]))
    target.apply(messages)
    target.equals_source(db)
