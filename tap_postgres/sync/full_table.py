"""FULL_TABLE: copy every row under a new table version, by block ranges on N sessions, resumable for every table.

A heap table (with or without a primary key), or each leaf partition of a partitioned one, is
read in ranges of its blocks (block_ranges) by `full_table_sessions` sessions sharing one
snapshot, and STATE records the ranges written (`copied_blocks`). A rerun after a kill keeps the
version and copies only the ranges not recorded; first, in the ranges that were, it copies again
every row written since the first run's snapshot (`snapshot_xmin`): a row inserted, or updated
(an update writes a new row version, wherever it lands), carries a newer xmin, and a row left
alone keeps its place, so every row arrives at least once. A relation rewritten since (a new
file: VACUUM FULL, CLUSTER) is copied again from its first block. Views and foreign tables are
copied in one pass and start over when interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from psycopg2 import extensions, sql

from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import MessageWriter, now_extracted
from tap_postgres.state import StreamBookmark
from tap_postgres.sync.block_ranges import (
    HEAP_KINDS,
    RangeCopy,
    Relation,
    ServerBlocks,
    copied_condition,
    heap_relations,
)
from tap_postgres.sync.helper_sessions import HelperSessions
from tap_postgres.sync.rows import CopySettings, Progress, RecordQueries, RecordSink, begin_snapshot
from tap_postgres.sync.stream import StreamSync

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
    """Copy the whole table (the positional form LOG_BASED's initial copy calls; see `copy_full_table`)."""
    bookmark = StreamBookmark(state, stream.tap_stream_id)
    copy_full_table(StreamSync(conn, table, stream, columns, bookmark, writer, settings, helpers), on_snapshot)


def copy_full_table(sync: StreamSync, on_snapshot: Callable[[extensions.cursor], None] | None = None) -> None:
    """Copy the whole table, then ACTIVATE_VERSION so the target drops rows of older versions.

    `on_snapshot` runs in the copy's snapshot before any row is read (LOG_BASED records its WAL position).
    """
    stream, table = sync.stream, sync.table
    version, first_run, resumes = sync.bookmark.begin_copy(new_version())
    envelope = sync.writer.envelope(stream.tap_stream_id, version, now_extracted())
    records = RecordQueries(stream, sync.columns, envelope, sync.settings.value_limit_of(stream))
    progress = Progress(stream.tap_stream_id, sync.settings.progress_seconds, expected_rows=table.row_count)
    sink = RecordSink(sync.writer, progress, sync.settings.value_limit)
    ranged = table.kind in HEAP_KINDS or table.kind == "p"

    begin_snapshot(sync.conn)
    with sync.conn.cursor() as cur, _helper_sessions(sync, ranged) as helper_cursors:
        if on_snapshot:
            on_snapshot(cur)
        relations = heap_relations(cur, stream.schema_name, stream.table_name, table.kind) if ranged else None
        # the first STATE already holds what on_snapshot recorded: a target may save only this one
        sync.writer.write_state(sync.bookmark.state)
        if first_run or (sync.writer.versions_before_records and not resumes):
            sync.writer.write_activate_version(stream.tap_stream_id, version)
        if relations is not None:
            _begin_ranges(cur, sync.bookmark, resumes)
        if relations is None:
            LOGGER.info("%s: copying it in one pass (not resumable)", stream.tap_stream_id)
            sink.copy(cur, records.matching())
        else:
            ranges = RangeCopy(records, sink, sync.bookmark, sync.writer, [cur, *helper_cursors], ServerBlocks.of(cur))
            for relation in relations:
                if resumes:
                    _copy_rows_changed_since_snapshot(cur, ranges, relation)
                ranges.copy(relation, sync.settings.itersize)
    sync.conn.commit()

    sync.bookmark.end_copy()
    sync.writer.write_activate_version(stream.tap_stream_id, version)
    progress.finish(sink)


def _helper_sessions(sync: StreamSync, ranged: bool):
    """Cursors of `full_table_sessions - 1` more sessions on the copy's snapshot (fewer if they cannot be had)."""
    wanted = sync.settings.sessions - 1 if ranged else 0
    if sync.helpers is None or wanted < 1:
        return contextlib.nullcontext([])
    return sync.helpers.on_snapshot_of(sync.conn, wanted)


def _begin_ranges(cur: extensions.cursor, bookmark: StreamBookmark, resumes: bool) -> None:
    """Record the first snapshot's xmin; on resume, start over when rows newer than it may have been frozen since."""
    if resumes and bookmark.snapshot_xmin is not None:
        cur.execute(
            "SELECT age((%s %% 4294967296)::text::xid) > current_setting('vacuum_freeze_min_age')::bigint",
            (int(bookmark.snapshot_xmin),),
        )
        if cur.fetchone()[0]:
            # a frozen row's xmin no longer tells when it was written: it would not be copied again
            LOGGER.warning(
                "%s: the interrupted copy is older than vacuum_freeze_min_age transactions, so rows written "
                "since may be frozen and no longer tell: copying the table again from its first block",
                bookmark.stream_id,
            )
            bookmark.forget_copied_blocks()
    elif resumes:
        bookmark.forget_copied_blocks()
    cur.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())")
    bookmark.record_snapshot_xmin(cur.fetchone()[0])


def _copy_rows_changed_since_snapshot(cur: extensions.cursor, ranges: RangeCopy, relation: Relation) -> None:
    """On resume, copy again the rows of the copied blocks written since the first run's snapshot.

    xmin of every row version not in that snapshot is at or after the snapshot's xmin (`age` is
    no greater): new rows, and the new versions of rows updated, wherever they were placed.
    """
    copied = ranges.bookmark.copied_blocks(relation.name, relation.filenode)
    if not copied.intervals():
        return
    changed = sql.SQL("{} AND age(source.xmin) <= age(({} % 4294967296)::text::xid)").format(
        copied_condition(copied), sql.Literal(int(ranges.bookmark.snapshot_xmin))
    )
    records = ranges.records_of(relation)
    rows = ranges.sink.copy(cur, records.matching(changed))
    LOGGER.info(
        "%s: %d rows of %s in blocks already copied were written since the interrupted run's snapshot",
        ranges.bookmark.stream_id,
        rows,
        relation.name,
    )
