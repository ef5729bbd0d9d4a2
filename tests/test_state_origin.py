"""A STATE belongs to one pipeline: a bookmark written for another database, server or slot is refused
before the slot is touched, at start and when the state file is re-read during a run, and no change is lost.

Two databases on one server share the WAL, so every `lsn` of one looks plausible to the other: only
the `origin` each bookmark records tells them apart.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
from conftest import Database, records_of, select_all, states_of

ORIGIN_REFUSED = "a state belongs to one pipeline; give this one its own state file"


@pytest.fixture(scope="module")
def other(server, db, tmp_path_factory):
    """A second database on the same server, with a pipeline of its own."""
    name = f"{db.name}_other"
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    database = Database(server=server, name=name, tmp_dir=tmp_path_factory.mktemp(name))
    database.plugin = database.default_plugin
    database.conn = server.connect(name)
    try:
        yield database
    finally:
        database.drop_slots()
        database.conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def pipelines(db, other):
    """Both databases with a table `items` and a LOG_BASED pipeline that has made its initial copy."""
    states = {}
    for database in (db, other):
        database.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        database.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 3) g")
        database.create_slot()
        states[database.name] = states_of(database.sync(log_based(database)))[-1]
    return states


def log_based(database) -> dict:
    return select_all(database.discover(), method="LOG_BASED")


def confirmed_flush(database) -> int:
    return database.query(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
        (f"pipelinewise_{database.name}",),
    )[0][0]


def system_identifier(database) -> str:
    return database.query("SELECT system_identifier::text FROM pg_control_system()")[0][0]


def test_every_bookmark_records_the_server_database_and_slot_it_belongs_to(db, pipelines):
    origin = pipelines[db.name]["bookmarks"]["public-items"]["origin"]
    assert origin == {
        "system_identifier": system_identifier(db),
        "database_oid": db.query("SELECT oid FROM pg_database WHERE datname = current_database()")[0][0],
        "dbname": db.name,
        "slot": f"pipelinewise_{db.name}",
    }


def test_a_log_based_state_from_another_database_is_refused_and_loses_no_change(db, other, pipelines):
    other.execute("UPDATE items SET name = name || '!'")  # the other pipeline's WAL goes on
    db.execute("UPDATE items SET name = 'changed' WHERE id = 1")
    other.execute("INSERT INTO items SELECT g, 'more' FROM generate_series(10, 500) g")
    slot_before = confirmed_flush(db)

    messages, stderr, code = db.try_sync(log_based(db), state=pipelines[other.name])

    assert code == 1 and len(stderr) == 1, stderr
    assert stderr[0].startswith("tap-postgres: error: public-items: the state was written for database ")
    assert f'"{other.name}"' in stderr[0] and ORIGIN_REFUSED in stderr[0]
    assert records_of(messages) == []
    assert confirmed_flush(db) == slot_before
    # with its own state, the pipeline still gets the change made in between
    rerun = db.sync(log_based(db), state=pipelines[db.name])
    assert [(r["id"], r["name"]) for r in records_of(rerun)] == [(1, "changed")]
    pipelines[db.name] = states_of(rerun)[-1]


@pytest.mark.parametrize("method", ["FULL_TABLE", "INCREMENTAL"])
def test_a_full_table_or_incremental_state_from_another_database_is_refused(db, other, method):
    key = "id" if method == "INCREMENTAL" else None
    foreign = states_of(other.sync(select_all(other.discover(), method=method, replication_key=key)))[-1]
    assert "slot" not in foreign["bookmarks"]["public-items"]["origin"]

    messages, stderr, code = db.try_sync(select_all(db.discover(), method=method, replication_key=key), state=foreign)

    assert code == 1 and len(stderr) == 1 and ORIGIN_REFUSED in stderr[0], stderr
    assert records_of(messages) == []


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("system_identifier", "1234567890123456789", "on server 1234567890123456789"),
        ("slot", "pipelinewise_elsewhere", 'replication slot "pipelinewise_elsewhere"'),
        ("database_oid", 4242, "(oid 4242)"),
    ],
)
def test_a_state_from_another_server_or_slot_is_refused_before_the_slot_moves(db, pipelines, field, value, named):
    db.execute("UPDATE items SET name = 'again' WHERE id = 2")
    state = copy.deepcopy(pipelines[db.name])
    state["bookmarks"]["public-items"]["origin"][field] = value
    slot_before = confirmed_flush(db)

    messages, stderr, code = db.try_sync(log_based(db), state=state)

    assert code == 1 and len(stderr) == 1 and named in stderr[0] and ORIGIN_REFUSED in stderr[0], stderr
    assert records_of(messages) == [] and confirmed_flush(db) == slot_before


def test_a_pipelinewise_state_without_origin_is_accepted_and_gains_one(db, pipelines):
    state = copy.deepcopy(pipelines[db.name])
    del state["bookmarks"]["public-items"]["origin"]
    messages = db.sync(log_based(db), state=state)
    assert states_of(messages)[-1]["bookmarks"]["public-items"]["origin"]["slot"] == f"pipelinewise_{db.name}"
    pipelines[db.name] = states_of(messages)[-1]


def test_a_malformed_origin_is_one_line(db, pipelines):
    state = copy.deepcopy(pipelines[db.name])
    state["bookmarks"]["public-items"]["origin"] = {"database_oid": "16384"}
    _, stderr, code = db.try_sync(log_based(db), state=state)
    assert code == 1 and len(stderr) == 1 and 'public-items: the state\'s "origin" is' in stderr[0], stderr


def test_a_state_file_rewritten_mid_run_from_elsewhere_is_ignored_and_never_followed(db, other, pipelines):
    """The file the target's runner rewrites is replaced by another pipeline's state, then by one whose
    lsn is past what the run emitted: both are ignored with one warning each, the slot stays put."""
    state = pipelines[db.name]
    start = state["bookmarks"]["public-items"]["lsn"]
    db.sync(log_based(db), state=state)  # the slot is confirmed up to the state's lsn
    assert confirmed_flush(db) == start
    # the other pipeline's lsn lies between this one's bookmark and what this run will emit
    other.execute("UPDATE items SET name = 'x' WHERE id = 1")
    foreign = states_of(other.sync(log_based(other), state=pipelines[other.name]))[-1]
    assert foreign["bookmarks"]["public-items"]["lsn"] > start
    db.execute("INSERT INTO items SELECT g, 'new' FROM generate_series(1000, 1100) g")
    beyond = copy.deepcopy(state)
    beyond["bookmarks"]["public-items"]["lsn"] = start + (1 << 40)

    config = dict(db.config, state_poll_seconds=1, break_at_end_lsn=False, max_run_seconds=9)
    process = db.start_sync(log_based(db), config, state=state)
    state_path = db.tmp_dir / "state-background.json"
    time.sleep(3)
    state_path.write_text(json.dumps(foreign))
    time.sleep(3)
    state_path.write_text(json.dumps(beyond))
    stdout, stderr = process.communicate(timeout=60)

    stderr = stderr.decode()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("the state file is ignored until it holds a state of this run") == 2, stderr
    assert f'"{other.name}"' in stderr and "past what this run emitted" in stderr
    emitted = [json.loads(line) for line in stdout.decode().splitlines()]
    assert len(records_of(emitted)) == 101
    assert states_of(emitted)[-1]["bookmarks"]["public-items"]["lsn"] > foreign["bookmarks"]["public-items"]["lsn"]
    assert confirmed_flush(db) == start
