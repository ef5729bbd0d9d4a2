"""A value the server cannot render as JSON (a record over 1 GB): one line naming it, or null with max_value_bytes.

180 million \\x01 characters are stored in 2 MB, but their JSON (\\u0001 each) is over 1 GB, which
the server refuses to build (SQLSTATE 54000) after several seconds of work: these cases run in
`make limits`, not `make test` (TAP_SERVER_LIMITS=1).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import records_of, select_all, states_of

pytestmark = pytest.mark.skipif(
    not os.environ.get("TAP_SERVER_LIMITS"), reason="minutes of server work: run with `make limits`"
)

HUGE = "repeat(chr(1), 180000000)"
LIMIT = 100_000_000


@pytest.fixture(scope="module")
def catalog(db):
    db.execute("CREATE TABLE huge (id int PRIMARY KEY, body text, n int)")
    db.execute(f"INSERT INTO huge VALUES (1, 'small', 1), (2, {HUGE}, 2), (3, 'small', 3)")
    db.execute("CREATE TABLE huge_keyless (body text)")
    db.execute(f"INSERT INTO huge_keyless VALUES ('small'), ({HUGE})")
    return db.discover()


def only(catalog: dict, stream_id: str, method: str = "FULL_TABLE", replication_key: str | None = None) -> dict:
    return select_all(json.loads(json.dumps(catalog)), method, replication_key, only={stream_id})


def error_line(stderr: list[str]) -> str:
    assert not any("Traceback" in line for line in stderr), "\n".join(stderr)
    return stderr[-1]


@pytest.mark.parametrize(
    "stream_id, method, replication_key, where",
    [
        ("public-huge", "FULL_TABLE", None, 'in the row with key {"id": 2}'),
        ("public-huge", "INCREMENTAL", "n", 'in the row with key {"id": 2}'),
        ("public-huge_keyless", "FULL_TABLE", None, "in the row with ctid (0,2)"),
    ],
)
def test_a_value_past_the_server_limit_stops_with_one_line_naming_it(
    db, catalog, stream_id, method, replication_key, where
):
    messages, stderr, code = db.try_sync(only(catalog, stream_id, method, replication_key))
    line = error_line(stderr)
    assert code == 1
    assert line.startswith(f'tap-postgres: error: stream {stream_id}: the value of column "body" {where} is 180000000')
    assert "max_value_bytes" in line and "deselect the column" in line
    assert messages[-1]["type"] == "STATE"

    messages, stderr, code = db.try_sync(
        only(catalog, stream_id, method, replication_key), config=dict(db.config, max_value_bytes=LIMIT)
    )
    assert code == 0, stderr
    assert sorted(record["body"] or "" for record in records_of(messages)).count("") == 1
    assert any('column "body"' in line and "emitted as null" in line for line in stderr)


@pytest.mark.parametrize("plugin", ["pgoutput", "wal2json"])
def test_log_based_is_never_stuck_on_a_value_past_the_server_limit(db, catalog, plugin):
    db.drop_slots()
    db.plugin = plugin
    db.execute("DROP TABLE IF EXISTS changing; CREATE TABLE changing (id int PRIMARY KEY, body text)")
    catalog = select_all(db.discover(), "LOG_BASED", only={"public-changing"})
    db.create_slot()
    first = db.sync(catalog)
    db.execute(f"INSERT INTO changing VALUES (1, {HUGE})")
    db.execute("INSERT INTO changing VALUES (2, 'after')")
    state = states_of(first)[-1]

    messages, stderr, code = db.try_sync(catalog, state=state)
    line = error_line(stderr)
    assert code == 1 and "max_value_bytes" in line, line
    assert (
        states_of(messages)[-1]["bookmarks"]["public-changing"]["lsn"] == state["bookmarks"]["public-changing"]["lsn"]
    )

    messages, stderr, code = db.try_sync(catalog, config=dict(db.config, max_value_bytes=LIMIT), state=state)
    if plugin == "wal2json":
        # wal2json builds the change's JSON in the walsender, before the tap sees it: the line gives
        # the way to pgoutput, a new slot and a new copy, which loses nothing
        line = error_line(stderr)
        assert code == 1 and "drop the slot" in line and "pgoutput" in line, line
        db.drop_slots()
        db.plugin = "pgoutput"
        config = dict(db.config, max_value_bytes=LIMIT)
        messages, stderr, code = db.try_sync(catalog, config=config, state={"bookmarks": {}})
        assert code == 0, stderr
        assert [(r["id"], r["body"]) for r in records_of(messages)] == [(1, None), (2, "after")]
        db.execute("INSERT INTO changing VALUES (3, 'later')")
        messages = db.sync(catalog, config=config, state=states_of(messages)[-1])
        assert [(r["id"], r["body"]) for r in records_of(messages)] == [(3, "later")]
    else:
        assert code == 0, stderr
        assert [(r["id"], r["body"]) for r in records_of(messages)] == [(1, None), (2, "after")]
    db.plugin = "wal2json"
