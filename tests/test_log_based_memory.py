"""LOG_BASED memory: what a pending change costs while it waits for its batch to render.

Every stream's batch waits until it holds BATCH_CHANGES or the transaction ends, so a transaction
over many tables holds tables x batch of them at once: each must cost about its own length
(`make bench` measures the peak RSS of 100 tables streamed at once).
"""

from __future__ import annotations

import itertools
import tracemalloc
import types

import orjson
import pytest
from conftest import select_all, states_of

from tap_postgres.discovery import describe_tables
from tap_postgres.sync.changes import IN_ORDER, ChangeOptions, StreamChanges
from tap_postgres.sync.decoders import Change
from tap_postgres.sync.logical import PENDING_CHANGES


@pytest.fixture(scope="module")
def table(db):
    db.execute("CREATE TABLE pending (id bigint PRIMARY KEY, n integer, note text, day date)")
    return describe_tables(db.conn, tables=[("public", "pending")])[0]


def pgoutput_row(table, n: int) -> Change:
    """A pgoutput insert of a whole row, as PgoutputDecoder returns it."""
    names = tuple(column.name for column in table.columns)
    values = [str(n), str(n % 7), f"note {n}", "2026-12-03"]
    return Change("I", relations=[("public", "pending")], names=names, values=values, whole_row=True, lsn="0/16B3748")


@pytest.mark.parametrize("debug_lsn", [False, True])
@pytest.mark.parametrize("render_in_tap", [False, True])
def test_a_pending_pgoutput_row_costs_about_its_length(table, debug_lsn, render_in_tap):
    """Rendered by the server (its entry for the render query) or in the tap (its record's JSON)."""
    stream = types.SimpleNamespace(tap_stream_id="public-pending")
    options = ChangeOptions("pgoutput", debug_lsn=debug_lsn, times_pinned=True, render_in_tap=render_in_tap)
    changes = StreamChanges(stream, table, table.columns, 1, options)
    rows = [pgoutput_row(table, n) for n in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for row in rows:
            changes.add(row, IN_ORDER)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    entries = changes._records if render_in_tap else changes._entries
    assert len(entries) == len(rows)
    if not render_in_tap:
        # the same JSON the render query has always read: ["F", values] (with the lsn: ["F", values, lsn])
        assert entries[7] == orjson.dumps(["F", rows[7].values, *(["0/16B3748"] if debug_lsn else [])])
    length = sum(len(entry) for entry in entries) / len(entries)
    # a bytes object's header and its slot in the list come to about 50 bytes; orjson's own
    # result keeps a 4 KB buffer, which made 100 streams' pending batches take 1.6 GB
    assert held / len(rows) < length + 100, f"{held / len(rows):.0f} bytes held per pending change of {length:.0f}"


@pytest.fixture(scope="module")
def many(db):
    for t in range(10):
        db.execute(f"CREATE TABLE many{t} (id int PRIMARY KEY, note text)")
    return db.create_slot()


def test_a_transaction_over_many_tables_holds_at_most_pending_changes_of_them(db, many):
    """Ten tables, 3000 changes each, interleaved in one transaction: each table's batch stays under
    BATCH_CHANGES, and yet no stream's records wait for all 30000 changes: every PENDING_CHANGES
    changes, every stream's pending ones are rendered, so no run of one stream's records is longer."""
    catalog = select_all(db.discover(), method="LOG_BASED", only={f"public-many{t}" for t in range(10)})
    state = states_of(db.sync(catalog))[-1]
    inserts = "".join(f"INSERT INTO many{t} VALUES (g, 'row ' || g); " for t in range(10))
    db.execute(f"DO $$ BEGIN FOR g IN 1..3000 LOOP {inserts} END LOOP; END $$")
    records = [m for m in db.sync(catalog, state=state) if m["type"] == "RECORD"]
    assert len(records) == 30000
    runs = [len(list(run)) for _, run in itertools.groupby(records, key=lambda m: m["stream"])]
    # (shorter runs too: the run also writes what it read every FLUSH_SECONDS)
    assert max(runs) <= PENDING_CHANGES // 10, runs
    for t in range(10):  # each stream's changes in their order
        assert [m["record"]["id"] for m in records if m["stream"] == f"public-many{t}"] == list(range(1, 3001))
