"""FULL_TABLE: copy every row under a new table version, resumable by primary-key ranges.

A table with a primary key is copied in batches of `itersize` keys, in one snapshot, and the last
key of each batch is checkpointed in STATE (`resume_key`). A rerun after a kill resumes after that
key under the same version, then copies again the already-passed rows that changed since the first
run's snapshot (`snapshot_xmin`), so every row arrives at least once without sorting the table.
Views and tables without a primary key are copied in one pass and start over when interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import MessageWriter, now_extracted
from tap_postgres.state import bookmark
from tap_postgres.sync.helper_sessions import HelperSessions
from tap_postgres.sync.rows import (
    EVERY_ROW,
    CopySettings,
    Progress,
    RecordQueries,
    RecordSink,
    begin_snapshot,
    column_ref,
    copy_to_bytes,
    key_tuple,
    key_values,
    table_source,
)

LOGGER = logging.getLogger("tap-postgres")


def new_version() -> int:
    """Return a new table version: milliseconds since the epoch, as pipelinewise uses."""
    return int(time.time() * 1000)


def sync_full_table(
    conn: extensions.connection,
    table: Table,
    stream: SelectedStream,
    columns: list[Column],
    state: dict,
    writer: MessageWriter,
    settings: CopySettings,
    helpers: HelperSessions | None = None,
    on_snapshot: Callable[[extensions.cursor], None] | None = None,
) -> None:
    """Copy the whole table, then ACTIVATE_VERSION so the target drops rows of older versions.

    `helpers` give a keyed copy a second session on its snapshot, if they can. `on_snapshot` runs in
    the copy's snapshot before any row is read (LOG_BASED records its WAL position).
    """
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    first_run = "version" not in stream_bookmark
    # pipelinewise's own interrupted-copy marker: its xmin order cannot be resumed, so copy again
    interrupted = "resume_key" in stream_bookmark or stream_bookmark.pop("xmin", None) is not None
    version = stream_bookmark["version"] if interrupted and not first_run else new_version()
    stream_bookmark["version"] = version

    envelope = writer.envelope(stream.tap_stream_id, version, now_extracted())
    records = RecordQueries(stream, columns, envelope, settings.value_limit_of(stream))
    progress = Progress(stream.tap_stream_id, settings.progress_seconds, expected_rows=table.row_count)
    sink = RecordSink(writer, progress, settings.value_limit)
    key_columns = [] if table.is_view else [column for column in table.columns if column.name in table.primary_key]
    key_columns.sort(key=lambda column: table.primary_key.index(column.name))
    if not all(column.type and types.is_comparable(column.type) for column in key_columns):
        key_columns = []  # a key without the ordinary < and > (hstore) cannot bound ranges: one pass

    begin_snapshot(conn)
    with conn.cursor() as cur, _helper_session(conn, helpers if key_columns else None) as helper:
        if on_snapshot:
            on_snapshot(cur)
        # the first STATE already holds what on_snapshot recorded: a target may save only this one
        writer.write_state(state)
        if first_run or (writer.versions_before_records and not interrupted):
            writer.write_activate_version(stream.tap_stream_id, version)
        if key_columns:
            _copy_by_key_ranges(cur, helper, records, key_columns, sink, state, writer, settings.itersize)
        else:
            LOGGER.info("%s has no primary key: copying it in one pass (not resumable)", stream.tap_stream_id)
            sink.copy(cur, records.matching())
    conn.commit()

    stream_bookmark.pop("resume_key", None)
    stream_bookmark.pop("snapshot_xmin", None)
    writer.write_activate_version(stream.tap_stream_id, version)
    progress.finish(sink)


def _helper_session(conn: extensions.connection, helpers: HelperSessions | None):
    """A second session on `conn`'s snapshot from `helpers`, or None."""
    return helpers.on_snapshot_of(conn) if helpers is not None else contextlib.nullcontext()


def _copy_by_key_ranges(cur, helper, records: RecordQueries, key_columns, sink, state, writer, itersize) -> None:
    """Copy batches of `itersize` keys in key order, checkpointing the last key after each batch.

    The server's rendering is the bottleneck, so when a `helper` cursor (a second session on the
    same snapshot) is there, batches are copied in pairs: the helper renders the first of each pair
    while this session renders the second. They are written, each with its STATE, in key order.
    """
    stream = records.stream
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    keys = key_tuple(key_columns)
    resume_key = stream_bookmark.get("resume_key")
    if resume_key is None:
        cur.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())")
        stream_bookmark["snapshot_xmin"] = cur.fetchone()[0]
    else:
        LOGGER.info("%s: resuming after key %s", stream.tap_stream_id, resume_key)
        _copy_rows_changed_since_snapshot(cur, records, key_columns, sink, state)

    def after(key: list | None) -> sql.Composable:
        return sql.SQL("{} > {}").format(keys, key_values(key_columns, key)) if key else EVERY_ROW

    def next_bound(key: list | None) -> list | None:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} OFFSET {} LIMIT 1").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(column_ref(c)) for c in key_columns),
                table_source(stream),
                after(key),
                keys,
                sql.Literal(itersize - 1),
            )
        )
        row = cur.fetchone()
        return list(row) if row else None

    def batch_query(low: list | None, high: list) -> sql.Composed:
        upto = sql.SQL("{} AND {} <= {}").format(after(low), keys, key_values(key_columns, high))
        return records.matching(upto, keys)

    def checkpoint(batch: tuple[bytes, int], key: list) -> None:
        sink.emit_batch(*batch)
        stream_bookmark["resume_key"] = key
        writer.write_state(state)

    with ThreadPoolExecutor(max_workers=1) as pool:
        while True:
            first = next_bound(resume_key)
            if first is None:
                break
            if helper is None:
                checkpoint(copy_to_bytes(cur, batch_query(resume_key, first)), first)
                resume_key = first
                continue
            first_batch = pool.submit(copy_to_bytes, helper, batch_query(resume_key, first))
            second = next_bound(first)
            second_batch = copy_to_bytes(cur, batch_query(first, second)) if second else None
            checkpoint(first_batch.result(), first)
            resume_key = first
            if second is None:
                break
            checkpoint(second_batch, second)
            resume_key = second
    # fewer than itersize keys are left after the last bound, within this snapshot
    sink.copy(cur, records.matching(after(resume_key), keys))


def _copy_rows_changed_since_snapshot(cur, records: RecordQueries, key_columns, sink, state) -> None:
    """On resume, copy again the rows up to the resume key written or changed after the first snapshot."""
    stream = records.stream
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    snapshot_xmin = stream_bookmark.get("snapshot_xmin")
    if snapshot_xmin is None:
        return
    changed = sql.SQL("{} <= {} AND age(xmin) <= age(({} % 4294967296)::text::xid)").format(
        key_tuple(key_columns), key_values(key_columns, stream_bookmark["resume_key"]), sql.Literal(int(snapshot_xmin))
    )
    rows = sink.copy(cur, records.matching(changed))
    LOGGER.info("%s: %d rows before the resume key changed since the interrupted run", stream.tap_stream_id, rows)
