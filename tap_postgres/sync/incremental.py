"""INCREMENTAL: rows whose replication key is >= the bookmark, in key order, in batches with STATE between.

Each batch ends at the key of its `itersize`-th row and takes every row with that key, so the
bookmark never stops in the middle of equal keys; with `limit` this is what keeps a run from
stalling when more than `limit` rows share one key value. The bookmark is the key as the tap
emits it (its JSON value), or the key's exact text where the emitted value is not exact (NaN,
out-of-range dates, 24:00, time zones: types.bookmark_sql), and is bound back with a cast to the
column's type.
"""

from __future__ import annotations

import decimal
import json
import logging

from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import MessageWriter, now_extracted
from tap_postgres.state import bookmark
from tap_postgres.sync.full_table import new_version
from tap_postgres.sync.rows import (
    CopySettings,
    Progress,
    RecordQueries,
    RecordSink,
    begin_snapshot,
    column_ref,
    key_tuple,
    key_values,
    table_source,
)

LOGGER = logging.getLogger("tap-postgres")


def sync_incremental(
    conn: extensions.connection,
    table: Table,
    stream: SelectedStream,
    columns: list[Column],
    state: dict,
    writer: MessageWriter,
    settings: CopySettings,
) -> None:
    """Emit the rows changed since the bookmark, advancing it after every batch."""
    stream_bookmark = bookmark(state, stream.tap_stream_id)
    version = stream_bookmark.get("version") or new_version()
    stream_bookmark["version"] = version
    stream_bookmark["replication_key"] = stream.replication_key
    writer.write_state(state)
    writer.write_activate_version(stream.tap_stream_id, version)

    key_column = next(column for column in columns if column.name == stream.replication_key)
    key = key_tuple([key_column])
    envelope = writer.envelope(stream.tap_stream_id, version, now_extracted())
    start = stream_bookmark.get("replication_key_value")
    # a first run reads the whole table, whose size is estimated; a later one an unknown part of it
    records = RecordQueries(stream, columns, envelope, settings.value_limit_of(stream))
    progress = Progress(
        stream.tap_stream_id, settings.progress_seconds, expected_rows=table.row_count if start is None else None
    )
    sink = RecordSink(writer, progress, settings.value_limit)
    itersize, limit = settings.itersize, settings.row_limit
    if start is None:
        take_from = counted_from = sql.SQL("{} IS NOT NULL").format(key)
    else:
        LOGGER.info("%s: rows with %s >= %s", stream.tap_stream_id, stream.replication_key, start)
        # Rows equal to the bookmark are emitted again (the bookmark is inclusive, as in pipelinewise)
        # but do not count towards a batch, so every run moves past them however many they are.
        take_from = sql.SQL("{} >= {}").format(key, key_values([key_column], [start]))
        counted_from = sql.SQL("{} > {}").format(key, key_values([key_column], [start]))

    begin_snapshot(conn)
    with conn.cursor() as cur:
        emitted = 0
        while limit is None or emitted < limit:
            batch = itersize if limit is None else min(itersize, limit - emitted)
            bound = _key_at_offset(cur, stream, key_column, counted_from, batch - 1)
            last_batch = bound is None
            if last_batch:
                bound = last_key(cur, stream, key_column, take_from)
                if bound is None:
                    break
            upto = sql.SQL("{} AND {} <= {}").format(take_from, key, key_values([key_column], [bound]))
            emitted += sink.copy(cur, records.matching(upto, key))
            stream_bookmark["replication_key_value"] = bound
            writer.write_state(state)
            if last_batch:
                break
            take_from = counted_from = sql.SQL("{} > {}").format(key, key_values([key_column], [bound]))
        if start is None and (limit is None or emitted < limit):
            # the first run also takes rows whose key is NULL, as pipelinewise does; later runs cannot
            sink.copy(cur, records.matching(sql.SQL("{} IS NULL").format(key)))
    conn.commit()
    progress.finish(sink)


def _key_at_offset(cur, stream: SelectedStream, key_column: Column, where: sql.Composable, offset: int):
    """Return the emitted value of the key `offset` rows into the rows matching `where`, or None."""
    cur.execute(
        sql.SQL("SELECT {}::text FROM {} WHERE {} ORDER BY {} OFFSET {} LIMIT 1").format(
            bookmark_of(key_column), table_source(stream), where, column_ref(key_column), sql.Literal(offset)
        )
    )
    return _json_value(cur.fetchone())


def last_key(cur, stream: SelectedStream, key_column: Column, where: sql.Composable):
    """Return the emitted value of the greatest key among rows matching `where`, or None."""
    cur.execute(
        sql.SQL("SELECT {}::text FROM {} WHERE {} ORDER BY {} DESC LIMIT 1").format(
            bookmark_of(key_column), table_source(stream), where, column_ref(key_column)
        )
    )
    return _json_value(cur.fetchone())


def bookmark_of(key_column: Column) -> sql.Composable:
    """Return the SQL of the key's bookmark: the emitted JSON value, or its exact text where that is lossy."""
    return types.bookmark_sql(key_column.type, column_ref(key_column))


def _json_value(row: tuple | None):
    """Parse a rendered key; fractions stay Decimal so numeric keys stay exact."""
    return None if row is None else json.loads(row[0], parse_float=decimal.Decimal)
