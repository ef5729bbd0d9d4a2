"""FULL_TABLE by block ranges: every table resumable, N sessions on one snapshot, kill -9 at any moment."""

from __future__ import annotations

import json
import random
import signal

import pytest
from conftest import records_of, select_all, states_of
from hypothesis import given
from hypothesis import strategies as st

from tap_postgres.state import CopiedBlocks
from tap_postgres.sync.block_ranges import SEQ_SCAN_RANGES_PER_SESSION, Relation, ServerBlocks

ROWS = 20000


@pytest.fixture(scope="module")
def catalog(db):
    # no primary key, and values that tell each row apart for the checks only
    db.execute("CREATE TABLE events (n int, payload text)")
    db.execute(f"INSERT INTO events SELECT g, repeat('x', 40) || g FROM generate_series(1, {ROWS}) g")
    db.execute("CREATE TABLE measures (city text, at int, v int) PARTITION BY LIST (city)")
    db.execute("CREATE TABLE measures_a PARTITION OF measures FOR VALUES IN ('a')")
    db.execute("CREATE TABLE measures_b PARTITION OF measures FOR VALUES IN ('b')")
    db.execute(
        "INSERT INTO measures SELECT CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END, g, g FROM generate_series(1, 3000) g"
    )
    db.execute("ANALYZE")
    return db.discover()


def only(catalog: dict, stream_id: str) -> dict:
    return select_all(json.loads(json.dumps(catalog)), only={stream_id})


def run_until_killed(db, catalog: dict, config: dict, state: dict | None, lines_to_read: int):
    """Start a sync, read `lines_to_read` lines, kill -9 it; return what was read and the last STATE in it."""
    process = db.start_sync(catalog, config=config, state=state)
    read, last_state = [], state
    for line in process.stdout:
        read.append(json.loads(line))
        if read[-1]["type"] == "STATE":
            last_state = read[-1]["value"]
        if len(read) >= lines_to_read:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    return read, last_state


def test_a_table_without_a_key_resumes_after_kill_resending_at_most_the_ranges_in_flight(db, catalog):
    config = dict(db.config, itersize=1000, full_table_sessions=2)
    first_run, state = run_until_killed(db, only(catalog, "public-events"), config, None, ROWS // 2)
    assert state["bookmarks"]["public-events"]["copied_blocks"]["events"]["below"] > 0
    second_run = db.sync(only(catalog, "public-events"), state=state, config=config)

    first = [r["n"] for r in records_of(first_run)]
    second = [r["n"] for r in records_of(second_run)]
    assert set(first) | set(second) == set(range(1, ROWS + 1))
    resent = len(set(first) & set(second))
    print(f"killed at 50%: re-sent {resent} rows, {resent / ROWS:.3f} of the table")
    # two sessions: at most the two ranges in flight come again, each about itersize rows (on 13,
    # without a TID Range Scan, the table in SEQ_SCAN_RANGES_PER_SESSION ranges per session)
    per_range = 1000 if db.server.version_num >= 140000 else ROWS / (2 * SEQ_SCAN_RANGES_PER_SESSION)
    assert resent <= 2 * 1.5 * per_range
    version = state["bookmarks"]["public-events"]["version"]
    assert {m["version"] for m in second_run if m["type"] == "RECORD"} == {version}


def test_a_four_session_copy_killed_three_times_delivers_every_row(db, catalog):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    config = dict(db.config, itersize=500, full_table_sessions=4)
    delivered: list[int] = []
    state = None
    for _ in range(3):
        read, state = run_until_killed(db, only(catalog, "public-events"), config, state, rng.randrange(50, ROWS // 2))
        delivered += [r["n"] for r in records_of(read)]
    last = db.sync(only(catalog, "public-events"), state=state, config=config)
    delivered += [r["n"] for r in records_of(last)]
    assert set(delivered) == set(range(1, ROWS + 1)), f"seed {seed}"
    print(
        f"seed {seed}: 4 sessions killed 3 times: {len(delivered) - ROWS} rows re-sent ({len(delivered) / ROWS - 1:.3f})"
    )
    assert "copied_blocks" not in states_of(last)[-1]["bookmarks"]["public-events"]


def test_rows_written_into_copied_blocks_while_the_tap_was_down_are_copied(db, catalog):
    config = dict(db.config, itersize=1000, full_table_sessions=1)
    first_run, state = run_until_killed(db, only(catalog, "public-events"), config, None, ROWS // 2)
    # an update in place (the page has room after the delete), an insert into freed space
    db.execute("DELETE FROM events WHERE n = 2")
    db.execute("UPDATE events SET payload = 'changed' WHERE n = 3")
    db.execute("INSERT INTO events VALUES (-1, 'new')")
    try:
        second_run = db.sync(only(catalog, "public-events"), state=state, config=config)
    finally:
        db.execute("DELETE FROM events WHERE n = -1")
        db.execute("UPDATE events SET payload = repeat('x', 40) || 3 WHERE n = 3")
        db.execute("INSERT INTO events VALUES (2, repeat('x', 40) || 2)")
    second = {r["n"]: r for r in records_of(second_run)}
    assert second[3]["payload"] == "changed" and -1 in second
    assert {r["n"] for r in records_of(first_run)} | set(second) >= set(range(3, ROWS + 1))


def test_a_table_rewritten_since_the_kill_is_copied_again_with_a_warning(db, catalog):
    config = dict(db.config, itersize=1000, full_table_sessions=1)
    _, state = run_until_killed(db, only(catalog, "public-events"), config, None, ROWS // 2)
    db.execute("VACUUM FULL events")
    messages, stderr, code = db.try_sync(only(catalog, "public-events"), config=config, state=state)
    assert code == 0
    assert sorted(r["n"] for r in records_of(messages)) == list(range(1, ROWS + 1))
    assert any("was rewritten since the interrupted copy" in line for line in stderr)


def test_a_partitioned_table_is_copied_partition_by_partition_and_resumes(db, catalog):
    config = dict(db.config, itersize=100, full_table_sessions=2)
    stream = only(catalog, "public-measures")
    first_run, state = run_until_killed(db, stream, config, None, 1500)
    copied = state["bookmarks"]["public-measures"]["copied_blocks"]
    assert set(copied) <= {"measures_a", "measures_b"} and copied
    second_run = db.sync(stream, state=state, config=config)
    delivered = {r["at"] for r in records_of(first_run) + records_of(second_run)}
    assert delivered == set(range(1, 3001))
    full = db.sync(stream, config=config)
    assert sorted(r["at"] for r in records_of(full)) == list(range(1, 3001))


def test_progress_and_sessions_are_logged(db, catalog):
    _, stderr, _ = db.try_sync(
        only(catalog, "public-events"), config=dict(db.config, itersize=1000, full_table_sessions=3)
    )
    assert any("on 3 sessions" in line for line in stderr), stderr


@given(st.integers(1, 10**7), st.floats(1, 300), st.integers(1, 10**6), st.integers(1, 16), st.booleans())
def test_ranges_hold_about_itersize_rows_and_without_a_tid_range_scan_at_most_four_per_session(
    blocks, rows_per_block, itersize, sessions, tid_range_scan
):
    relation = Relation("t", "public", "t", blocks, 1, rows_per_block)
    per_range = ServerBlocks(tid_range_scan).blocks_per_range(relation, itersize, sessions)
    assert per_range >= relation.blocks_per_range(itersize) >= 1
    if tid_range_scan:
        assert per_range == relation.blocks_per_range(itersize)
    else:
        # each range is a scan of the whole table on 13: their number stays bounded
        assert -(-blocks // per_range) <= SEQ_SCAN_RANGES_PER_SESSION * sessions


@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), max_size=20), st.integers(1, 7))
def test_copied_blocks_and_missing_ranges_cover_every_block_once(ranges, per_range):
    blocks = 70
    copied = CopiedBlocks(filenode=1)
    done = set()
    for start, length in ranges:
        copied.add(start, start + length)
        done |= set(range(start, start + length))
        assert CopiedBlocks.is_bookmark(copied.to_bookmark())
    covered = {block for start, end in copied.intervals() for block in range(start, end)}
    assert covered == done | set(range(copied.below))
    assert set(range(copied.below)) <= done
    missing = copied.missing(blocks, per_range)
    assert all(0 < end - start <= per_range for start, end in missing)
    missing_blocks = [block for start, end in missing for block in range(start, end)]
    assert sorted(missing_blocks) == sorted(set(range(blocks)) - covered)
    # compact: every range kept is above the low-water block and apart from the next
    assert all(copied.below < start and start < end for start, end in copied.ranges)


def incremental(catalog: dict, stream_id: str, key: str) -> dict:
    return select_all(json.loads(json.dumps(catalog)), "INCREMENTAL", replication_key=key, only={stream_id})


def test_an_incremental_first_run_copies_by_ranges_and_bookmarks_the_snapshots_greatest_key(db, catalog):
    config = dict(db.config, itersize=1000, full_table_sessions=2)
    stream = incremental(catalog, "public-events", "n")
    first_run, state = run_until_killed(db, stream, config, None, ROWS // 2)
    assert state["bookmarks"]["public-events"]["copied_blocks"]["events"]["below"] > 0
    assert "replication_key_value" not in state["bookmarks"]["public-events"]
    second_run = db.sync(stream, state=state, config=config)
    assert {r["n"] for r in records_of(first_run) + records_of(second_run)} == set(range(1, ROWS + 1))
    final = states_of(second_run)[-1]["bookmarks"]["public-events"]
    assert final["replication_key_value"] == ROWS and "copied_blocks" not in final

    db.execute("INSERT INTO events VALUES (-5, 'low key'), (NULL, 'no key')")
    try:
        later = db.sync(stream, state=states_of(second_run)[-1], config=config)
    finally:
        db.execute("DELETE FROM events WHERE n = -5 OR n IS NULL")
    # later runs are batches from the bookmark, as before: the row equal to it comes again
    assert [r["n"] for r in records_of(later)] == [ROWS]


def test_an_incremental_first_run_with_a_limit_keeps_its_batches(db, catalog):
    stream = incremental(catalog, "public-events", "n")
    messages = db.sync(stream, config=dict(db.config, itersize=1000, limit=3000))
    assert [r["n"] for r in records_of(messages)] == list(range(1, 3001))
    assert states_of(messages)[-1]["bookmarks"]["public-events"]["replication_key_value"] == 3000
