"""A state file a person edited or another tool wrote: each wrong value ends the run before any
copy with one line naming the stream, the key and the value, and never moves the replication slot."""

from __future__ import annotations

import pytest
from conftest import records_of, select_all

FIX = "fix it, or remove the stream's bookmark from the state to sync it anew"


@pytest.fixture(scope="module")
def catalog(db):
    db.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    db.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
    return db.discover()


@pytest.fixture(scope="module")
def slot(db):
    return db.create_slot()


def run(db, catalog: dict, method: str, saved: dict):
    chosen = select_all(catalog, method=method, replication_key="id" if method == "INCREMENTAL" else None)
    state = {"bookmarks": {"public-items": {"last_replication_method": method, **saved}}}
    messages, stderr, code = db.try_sync(chosen, state=state)
    assert "Traceback" not in "\n".join(stderr)
    return messages, stderr, code


INCREMENTAL = {"replication_key": "id"}
CASES = [
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": "abc"},
        'public-items: the state\'s "replication_key_value" "abc" does not fit column(s) "id": '
        f'invalid input syntax for type integer: "abc"; {FIX}',
    ),
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": 10**30},
        'public-items: the state\'s "replication_key_value" 1000000000000000000000000000000 does not fit column(s) '
        f'"id": value "1000000000000000000000000000000" is out of range for type integer; {FIX}',
    ),
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": 2.5},
        f'public-items: the state\'s "replication_key_value" 2.5 does not fit column(s) "id": '
        f'invalid input syntax for type integer: "2.5"; {FIX}',
    ),
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": True},
        f'public-items: the state\'s "replication_key_value" true does not fit column(s) "id": '
        f'invalid input syntax for type integer: "true"; {FIX}',
    ),
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": {"id": 3}},
        f'public-items: the state\'s "replication_key_value" is {{"id": 3}}, not one value: {FIX}',
    ),
    (
        "INCREMENTAL",
        {**INCREMENTAL, "replication_key_value": [3]},
        f'public-items: the state\'s "replication_key_value" is [3], not one value: {FIX}',
    ),
    (
        "FULL_TABLE",
        {"version": "x"},
        f'public-items: the state\'s "version" is "x", not an integer from 0 to {2**63 - 1}: {FIX}',
    ),
    (
        "FULL_TABLE",
        {"version": 1, "resume_key": "3"},
        f'public-items: the state\'s "resume_key" is "3", not a list of key values: {FIX}',
    ),
    (
        "FULL_TABLE",
        {"version": 1, "resume_key": ["3"], "snapshot_xmin": "abc"},
        f'public-items: the state\'s "snapshot_xmin" is "abc", not an integer from 0 to {2**64 - 1}: {FIX}',
    ),
    (
        "FULL_TABLE",
        {"version": 1, "resume_key": ["3", "4"]},
        'public-items: the state\'s "resume_key" ["3", "4"] has 2 values, the primary key of "public"."items" has '
        "1 columns: remove resume_key and snapshot_xmin from the stream's bookmark to copy the table again",
    ),
    (
        "FULL_TABLE",
        {"version": 1, "resume_key": ["three"]},
        f'public-items: the state\'s "resume_key" ["three"] does not fit column(s) "id": '
        f'invalid input syntax for type integer: "three"; {FIX}',
    ),
    (
        "LOG_BASED",
        {"version": 1, "lsn": 2**64},
        f'public-items: the state\'s "lsn" is {2**64}, not a WAL position: {FIX}',
    ),
    (
        "LOG_BASED",
        {"version": 1, "lsn": "0/0/0"},
        f'public-items: the state\'s "lsn" is "0/0/0", not a WAL position: {FIX}',
    ),
]


@pytest.mark.parametrize(("method", "saved", "message"), CASES)
def test_a_wrong_bookmark_is_one_line_before_any_copy(db, catalog, slot, method, saved, message):
    messages, stderr, code = run(db, catalog, method, saved)
    assert code == 1
    assert stderr[-1] == f"tap-postgres: error: {message}"
    assert not records_of(messages)


def confirmed_flush(db, slot) -> str:
    return db.query("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0][0]


def test_an_lsn_beyond_the_servers_wal_is_refused_and_the_slot_stays(db, catalog, slot):
    before = confirmed_flush(db, slot)
    messages, stderr, code = run(db, catalog, "LOG_BASED", {"version": 1, "lsn": 2**40})
    assert code == 1
    assert stderr[-1].startswith(
        'tap-postgres: error: public-items: the state\'s "lsn" or "copy_snapshot" is beyond the server\'s current WAL '
        "position "
    )
    assert not records_of(messages)
    assert confirmed_flush(db, slot) == before
