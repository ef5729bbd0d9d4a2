"""The row path shared by FULL_TABLE and INCREMENTAL: the server renders whole RECORD lines, we copy bytes.

One row from the table to stdout: `RecordQueries` wraps each selected column in its type's render
expression (types.render_sql), `row_to_json` makes the record object, and the server concatenates
the RECORD envelope around it. `COPY ... TO STDOUT` in CSV form with a delimiter and quote that
JSON text never contains raw (\\x01, \\x02) sends each line unescaped, so `RecordSink` only joins
and writes bytes: no Python object per value, none per row but the bytes psycopg2 hands over.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable

from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.discovery import Column, Table
from tap_postgres.errors import NotSupportedError, TableMissingError
from tap_postgres.metrics import StreamMetrics
from tap_postgres.output import MessageWriter
from tap_postgres.sync.oversize import StreamValueLimit, ValueLimit

LOGGER = logging.getLogger("tap-postgres")

SINK_FLUSH_BYTES = 1 << 20
PROGRESS_SECONDS = 5.0

EVERY_ROW = sql.SQL("TRUE")
# JSON text never holds these two bytes raw, so CSV mode sends each rendered line unescaped
COPY_OPTIONS = sql.SQL("WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')")


def selected_columns(table: Table, stream: SelectedStream) -> list[Column]:
    """Return the table's columns that the stream emits, or raise when one is gone or unsupported."""
    by_name = {column.name: column for column in table.columns}
    columns = []
    for name in stream.columns:
        column = by_name.get(name)
        if column is None:
            raise TableMissingError(
                f'column "{name}" of stream {stream.tap_stream_id} no longer exists: '
                "rerun --discover and update the catalog"
            )
        if column.type is None or types.family_of(column.type) is None:
            raise NotSupportedError(
                f'column "{name}" of stream {stream.tap_stream_id} has type {column.sql_datatype}, '
                "which the tap cannot emit: deselect it in the catalog"
            )
        columns.append(column)
    return columns


def table_source(stream: SelectedStream) -> sql.Composed:
    """Return the stream's table as `"schema"."table" AS source`, the FROM of every query."""
    return sql.SQL("{} AS source").format(sql.Identifier(stream.schema_name, stream.table_name))


def column_ref(column: Column, relation: str = "source") -> sql.Identifier:
    """Return `source."column"`: qualified, because a bare name in ORDER BY would mean the rendered output column."""
    return sql.Identifier(relation, column.name)


def render_column(column: Column, value: sql.Composable | None = None) -> sql.Composable:
    """Return the SQL that renders a column (or `value`, an expression of its type) for emitting."""
    return types.render_sql(column.type, value or column_ref(column))


def rendered_columns(
    columns: list[Column], relation: str = "source", limit: StreamValueLimit | None = None
) -> sql.Composed:
    """Return the select list `render(source."c") AS "c", ...` of one record, read from `relation`.

    With a `limit` (max_value_bytes), a value longer than it renders as the limit's marker.
    """
    rendered = []
    for column in columns:
        value = column_ref(column, relation)
        render = render_column(column, value)
        if limit is not None:
            render = limit.render(column, value, render)
        rendered.append(sql.SQL("{} AS {}").format(render, sql.Identifier(column.name)))
    return sql.SQL(", ").join(rendered)


@dataclasses.dataclass(frozen=True)
class CopySettings:
    """The settings every FULL_TABLE and INCREMENTAL copy of a run follows."""

    itersize: int
    progress_seconds: float
    value_limit: ValueLimit | None = None  # max_value_bytes
    row_limit: int | None = None  # `limit`: INCREMENTAL's most rows a run
    sessions: int = 1  # full_table_sessions

    @classmethod
    def of(cls, config: Config, streams: list[SelectedStream]) -> CopySettings:
        """Return the copy settings of a run's config."""
        value_limit = ValueLimit(config.max_value_bytes, streams) if config.max_value_bytes else None
        return cls(config.itersize, config.progress_seconds, value_limit, config.limit, config.full_table_sessions)

    def value_limit_of(self, stream: SelectedStream) -> StreamValueLimit | None:
        """Return max_value_bytes as `stream`'s render queries apply it, or None when unset."""
        return self.value_limit.of(stream) if self.value_limit else None


@dataclasses.dataclass(frozen=True)
class RecordQueries:
    """The COPY statements of one stream's copy: its columns rendered in its RECORD envelope."""

    stream: SelectedStream
    columns: list[Column]
    envelope: tuple[str, str]
    value_limit: StreamValueLimit | None = None
    relation: tuple[str, str] | None = None  # (schema, table) read instead of the stream's: a partition

    def matching(self, where: sql.Composable = EVERY_ROW, order_by: sql.Composable | None = None) -> sql.Composed:
        """Return the COPY statement that emits one whole RECORD line per row matching `where`."""
        inner = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            rendered_columns(self.columns, limit=self.value_limit), self._source(), where
        )
        if order_by is not None:
            inner = sql.SQL("{} ORDER BY {}").format(inner, order_by)
        return copy_records(self.envelope, inner, [column.name for column in self.columns])

    def _source(self) -> sql.Composed:
        if self.relation is None:
            return table_source(self.stream)
        return sql.SQL("{} AS source").format(sql.Identifier(*self.relation))


def copy_records(envelope: tuple, rendered: sql.Composable, names: list[str] | None = None) -> sql.Composed:
    """Return the COPY that wraps each row of the `rendered` query (its columns `names`) in the RECORD envelope.

    `r.*`, not `r`: a bare `r` would mean a column named r of the user's table, if it has one. A
    fast-mapped stream's envelope carries its map third (fast_maps.FastMapWriter), which the server applies.
    """
    prefix, suffix, *fast_map = envelope
    if fast_map:
        rendered = fast_map[0].over(rendered, names)
    if not prefix and not suffix:  # a BATCH file's line: the record object alone
        return sql.SQL("COPY (SELECT row_to_json(r.*)::text FROM ({}) AS r) TO STDOUT {}").format(
            rendered, COPY_OPTIONS
        )
    return sql.SQL("COPY (SELECT {} || row_to_json(r.*)::text || {} FROM ({}) AS r) TO STDOUT {}").format(
        sql.Literal(prefix), sql.Literal(suffix), rendered, COPY_OPTIONS
    )


def row_of(items) -> sql.Composable:
    """Return `(a, b)` for several SQL items and `a` for one, for row comparisons and ORDER BY."""
    items = list(items)
    joined = sql.SQL(", ").join(items)
    return sql.SQL("({})").format(joined) if len(items) > 1 else joined


def compared(column: Column, value: sql.Composable) -> sql.Composable:
    """Return `value` (of the column's type) ready for < = >: a domain's value cast to its base type."""
    base = types.base_type_sql(column.type)
    return sql.SQL("({})::{}").format(value, base) if base else value


def key_tuple(columns: list[Column]) -> sql.Composable:
    """Return `(a, b)` (or `a`) for key columns, for row comparisons and ORDER BY."""
    return row_of(compared(column, column_ref(column)) for column in columns)


def key_values(columns: list[Column], values: list) -> sql.Composable:
    """Return the key values as literals of the key columns' types, `('v1'::t1, 'v2'::t2)`, matching `key_tuple`.

    Each value is given as text to its type's input function, which accepts only a value of that
    type: 1.5 or true for an integer key is an error, where a cast of a number would round it.
    """
    return row_of(
        compared(column, sql.SQL("{}::{}").format(sql.Literal(_as_text(value)), sql.Identifier(*column.type_name)))
        for column, value in zip(columns, values, strict=True)
    )


def _as_text(value) -> str:
    """Return a key value of a bookmark (a JSON scalar) as the text its type's input function reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def begin_snapshot(conn: extensions.connection) -> None:
    """Start a read-only REPEATABLE READ transaction, so every batch of a stream sees one snapshot."""
    conn.rollback()
    conn.set_session(isolation_level=extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)


def copy_to_bytes(cur: extensions.cursor, query: sql.Composed) -> tuple[bytes, int]:
    """Run a COPY of a batch known to be small (itersize unique keys); return its lines and row count.

    psycopg2 writes each line into a BytesIO, whose write is C: no Python runs per row.
    """
    batch = io.BytesIO()
    cur.copy_expert(query, batch)
    return batch.getvalue(), cur.rowcount


class RecordSink:
    """Target of COPY: takes server-rendered RECORD lines and writes them on in large blocks.

    psycopg2 calls the file's write once per row: an io.BufferedWriter, whose write is C, so no
    Python runs per row, and whole lines reach the output SINK_FLUSH_BYTES at a time.
    """

    def __init__(self, writer: MessageWriter, progress: Progress, limit: ValueLimit | None = None):
        self._write_lines = writer.write_lines
        self._progress = progress
        self._limit = limit
        self._own_lock = threading.Lock()
        self.saw_clamped_timestamp = False

    def emit_batch(self, lines: bytes, rows: int) -> None:
        """Write a batch that `copy_to_bytes` read."""
        self.emit_block(lines)
        self._progress.add(rows)

    def copy(self, cur: extensions.cursor, query: sql.Composed) -> int:
        """Run a COPY of any size, so memory stays bounded, and return its row count."""
        rows = self.copy_shared(cur, query, self._own_lock)
        self.count(rows)
        return rows

    def copy_shared(self, cur: extensions.cursor, query: sql.Composed, lock: threading.Lock) -> int:
        """Run a COPY while other sessions copy into this sink too, writing under `lock`; return its row count.

        The rows are not counted yet: the caller counts them under the lock (`count`).
        """
        with io.BufferedWriter(_LockedBlocks(self, lock), SINK_FLUSH_BYTES) as buffered:
            cur.copy_expert(query, buffered)
        return cur.rowcount

    def count(self, rows: int) -> None:
        """Count rows a copy has written."""
        self._progress.add(rows)

    def emit_block(self, block: bytes) -> None:
        """Write a block of whole lines."""
        if self._limit is not None and self._limit.marker in block:
            block = self._limit.replace_markers(block, self._progress.stream_id)
        if not self.saw_clamped_timestamp:
            self.saw_clamped_timestamp = any(marker in block for marker in types.CLAMPED_TIMESTAMPS)
        self._write_lines(block)
        self._progress.tick()


class _LockedBlocks(io.RawIOBase):
    """The raw side of a copy's write buffer: blocks of whole lines, handed to the sink under a lock.

    io.BufferedWriter hands over what it holds, or one write larger than its buffer, whole: each
    write of psycopg2 is one line, so every block ends at the end of a line.
    """

    def __init__(self, sink: RecordSink, lock: threading.Lock):
        super().__init__()
        self._sink = sink
        self._lock = lock

    def writable(self) -> bool:
        """Tell io that this stream takes writes."""
        return True

    def write(self, block) -> int:
        """Write one block to the sink."""
        data = bytes(block)
        with self._lock:
            self._sink.emit_block(data)
        return len(data)


class Progress:
    """Logs a stream's record count and rate to stderr every `interval` seconds, with how much is left.

    A copy knows the table's estimated rows (`expected_rows`): it adds the percentage done and the
    time left at the rate so far. LOG_BASED knows how far behind the end of the WAL it reads
    (`behind`: bytes and seconds, or None until the server has said where its WAL ends).
    """

    def __init__(
        self,
        stream_id: str,
        interval: float = PROGRESS_SECONDS,
        expected_rows: int | None = None,
        behind: Callable[[], tuple[int, float] | None] | None = None,
    ):
        self.stream_id = stream_id
        self.rows = 0
        self.interval = interval
        self.expected_rows = expected_rows or None  # 0: nothing to measure against
        self.behind = behind
        self.started = self._last_report = time.monotonic()
        self.metrics = StreamMetrics(stream_id)

    def add(self, rows: int) -> None:
        """Count rows that have been written."""
        self.rows += rows
        self.metrics.add(rows)
        self.tick()

    def tick(self) -> None:
        """Report if the last report is old enough."""
        now = time.monotonic()
        if now - self._last_report >= self.interval:
            self._last_report = now
            LOGGER.info(
                "%s: %d records so far, %.0f records/s%s", self.stream_id, self.rows, self.rate(now), self._left(now)
            )

    def _left(self, now: float) -> str:
        """Return what is left to do, as the progress line ends: `, 40% of ~1000 rows, ~12 s left`."""
        if self.behind is not None:
            lag = self.behind()
            return "" if lag is None else f", {lag[0]} bytes ({lag[1]:.0f} s) behind the end of the WAL"
        if self.expected_rows is None:
            return ""
        if self.rows >= self.expected_rows:
            return f", more than the ~{self.expected_rows} rows estimated"
        rate = self.rate(now)
        left = f", ~{(self.expected_rows - self.rows) / rate:.0f} s left" if rate > 0 else ""
        return f", {100 * self.rows // self.expected_rows}% of ~{self.expected_rows} rows{left}"

    def rate(self, now: float | None = None) -> float:
        """Return records per second since the stream started."""
        elapsed = (now or time.monotonic()) - self.started
        return self.rows / elapsed if elapsed > 0 else 0.0

    def finish(self, sink: RecordSink) -> None:
        """Log the stream's total, and warn when dates or timestamps were out of range."""
        LOGGER.info("%s: %d records in %.1f s", self.stream_id, self.rows, time.monotonic() - self.started)
        self.metrics.finish()
        if sink.saw_clamped_timestamp:
            LOGGER.warning(
                "%s: some dates or timestamps were outside 0001-01-01..9999-12-31 (or infinity) and were "
                "emitted as %s or %s",
                self.stream_id,
                types.TIMESTAMP_BEFORE_RANGE,
                types.TIMESTAMP_AFTER_RANGE,
            )
