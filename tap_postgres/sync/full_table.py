"""FULL_TABLE: copy every row under a new table version, resumable by primary-key ranges.

A table with a primary key is copied in batches of `itersize` keys, in one snapshot, and the last
key of each batch is checkpointed in STATE (`resume_key`). A rerun after a kill resumes after that
key under the same version, then copies again the already-passed rows that changed since the first
run's snapshot (`snapshot_xmin`), so every row arrives at least once without sorting the table.
Views and tables without a primary key are copied in one pass and start over when interrupted.
"""

from __future__ import annotations

import logging
import time

from psycopg2 import extensions, sql

from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import MessageWriter, now_extracted, record_envelope
from tap_postgres.state import bookmark
from tap_postgres.sync.rows import (
    EVERY_ROW,
    Progress,
    RecordSink,
    begin_snapshot,
    column_ref,
    key_tuple,
    key_values,
    record_query,
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
    itersize: int,
) -> None:
    """Copy the whole table, then ACTIVATE_VERSION so the target drops rows of older versions."""
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    first_run = "version" not in stream_bookmark
    # pipelinewise's own interrupted-copy marker: its xmin order cannot be resumed, so copy again
    interrupted = "resume_key" in stream_bookmark or stream_bookmark.pop("xmin", None) is not None
    version = stream_bookmark["version"] if interrupted and not first_run else new_version()
    stream_bookmark["version"] = version
    writer.write_state(state)
    if first_run:
        writer.write_activate_version(stream.tap_stream_id, version)

    envelope = record_envelope(stream.tap_stream_id, version, now_extracted())
    progress = Progress(stream.tap_stream_id)
    sink = RecordSink(writer, progress)
    key_columns = [] if table.is_view else [column for column in table.columns if column.name in table.primary_key]
    key_columns.sort(key=lambda column: table.primary_key.index(column.name))

    begin_snapshot(conn)
    with conn.cursor() as cur:
        if key_columns:
            _copy_by_key_ranges(cur, stream, columns, key_columns, envelope, sink, state, writer, itersize)
        else:
            LOGGER.info("%s has no primary key: copying it in one pass (not resumable)", stream.tap_stream_id)
            sink.copy(cur, record_query(stream, columns, envelope))
    conn.commit()

    stream_bookmark.pop("resume_key", None)
    stream_bookmark.pop("snapshot_xmin", None)
    writer.write_activate_version(stream.tap_stream_id, version)
    progress.finish(sink)


def _copy_by_key_ranges(cur, stream, columns, key_columns, envelope, sink, state, writer, itersize) -> None:
    """Copy batches of `itersize` keys in key order, checkpointing the last key after each batch."""
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    keys = key_tuple(key_columns)
    resume_key = stream_bookmark.get("resume_key")
    if resume_key is None:
        cur.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())")
        stream_bookmark["snapshot_xmin"] = cur.fetchone()[0]
    else:
        LOGGER.info("%s: resuming after key %s", stream.tap_stream_id, resume_key)
        _copy_rows_changed_since_snapshot(cur, stream, columns, key_columns, envelope, sink, state)

    while True:
        after = sql.SQL("{} > {}").format(keys, key_values(key_columns, resume_key)) if resume_key else EVERY_ROW
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} OFFSET %s LIMIT 1").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(column_ref(c)) for c in key_columns),
                table_source(stream),
                after,
                keys,
            ),
            (itersize - 1,),
        )
        bound = cur.fetchone()
        if bound is None:
            sink.copy(cur, record_query(stream, columns, envelope, after, keys))
            return
        upto = sql.SQL("{} AND {} <= {}").format(after, keys, key_values(key_columns, list(bound)))
        sink.copy_batch(cur, record_query(stream, columns, envelope, upto, keys))
        resume_key = list(bound)
        stream_bookmark["resume_key"] = resume_key
        writer.write_state(state)


def _copy_rows_changed_since_snapshot(cur, stream, columns, key_columns, envelope, sink, state) -> None:
    """On resume, copy again the rows up to the resume key written or changed after the first snapshot."""
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    snapshot_xmin = stream_bookmark.get("snapshot_xmin")
    if snapshot_xmin is None:
        return
    changed = sql.SQL("{} <= {} AND age(xmin) <= age(({} % 4294967296)::text::xid)").format(
        key_tuple(key_columns), key_values(key_columns, stream_bookmark["resume_key"]), sql.Literal(int(snapshot_xmin))
    )
    rows = sink.copy(cur, record_query(stream, columns, envelope, changed))
    LOGGER.info("%s: %d rows before the resume key changed since the interrupted run", stream.tap_stream_id, rows)
