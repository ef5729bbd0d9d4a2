"""The wal2json changes of one LOG_BASED stream, rendered into RECORD lines by the server like FULL_TABLE rows.

wal2json prints every value as PostgreSQL text (json and arrays included), and Python never looks
at the values: a batch of raw wal2json messages goes back to the server, which reads each value
into its column's type (`types.wal2json_value_sql`) and renders it with the same `types.render_sql`
expression FULL_TABLE uses. Both methods therefore emit byte-identical values, and no float or
JSON number passes through Python on the way. The exception: a pgoutput whole row of a stream
whose every column local_render.py can render becomes its record here, with the same bytes, and
the stream's batches (lines rendered here, COPYs for the server) are written in the order of its changes.

Rules (documented in the README):
- a delete emits the values of the replica identity (the primary key, or every column with
  REPLICA IDENTITY FULL), null for the other columns, and `_sdc_deleted_at`, the commit time;
  inserts and updates emit `_sdc_deleted_at` null;
- an update that changes the primary key emits a delete of the old key first;
- a column an update leaves out (wal2json omits unchanged TOASTed values) takes the value of the
  old row when the replica identity is FULL, else the row's current value read by primary key
  when the batch is rendered. It is never emitted as NULL while the row exists; if the row has
  been deleted since, the delete follows later in the stream;
- a generated column the plugin does not send (pgoutput's, a virtual one) is its expression
  evaluated over the change's own values (in a delete, only over a FULL identity's old row);
- a change written before the table's columns changed (its names are not the table's as it is
  now: a column renamed, dropped, or added since, in any order) keeps its key and takes every
  other value from the row as it is now, read by primary key: a value read by name could be
  another column's, and the stored row is where later changes lead anyway (schema_changes.py
  says when the stream is also copied again). A table without a key reads such a change by name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import orjson
from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import DELETED_AT, LSN, SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.errors import OversizeValueError, ReplicationError
from tap_postgres.output import now_extracted, record_envelope
from tap_postgres.sync.decoders import Change, wal2json_values
from tap_postgres.sync.local_render import LocalOptions, LocalRows
from tap_postgres.sync.oversize import LONGEST_ENTRY, OVERSIZE_WAY_ON, ValueLimit, log_nulled
from tap_postgres.sync.rows import (
    RecordSink,
    compared,
    copy_records,
    copy_to_bytes,
    render_column,
    rendered_columns,
    row_of,
)

LOGGER = logging.getLogger("tap-postgres")

BATCH_CHANGES = 5000
BATCH_BYTES = 8 << 20

_COMMIT_TIME = types.ColumnType(base_name="timestamptz", base_kind="b", base_category="D")

# Every reference to a change, a stored row or a typed value is qualified by one of the render
# query's relations (change, stored, typed), so no column name of a user's table can capture it.
_COMMIT_TIME_SQL = sql.SQL("(change.entry->1->>'timestamp')::timestamptz")
_CHANGE_LSN_SQL = sql.SQL("(coalesce(change.entry->>2, change.entry->1->>'lsn')::pg_lsn - '0/0')::bigint")


# How a change's columns line up with the table's (StreamChanges.layout_of).
IN_ORDER, BY_NAME, STALE, NEW_COLUMNS = "in order", "by name", "stale", "new columns"


def log_based_schema(stream: SelectedStream, debug_lsn: bool) -> dict:
    """Return the stream's JSON schema as LOG_BASED records fill it, with the properties it adds.

    A delete carries only the replica identity, so every column but the key can be null in a
    LOG_BASED record, NOT NULL or not (and every column of a table without a key).
    """
    keys = set(stream.key_properties)
    schema = dict(stream.schema)
    schema["properties"] = {
        name: prop if name in keys else types.with_null(prop) for name, prop in schema["properties"].items()
    }
    schema["properties"][DELETED_AT] = {"type": ["null", "string"], "format": "date-time"}
    if debug_lsn:
        schema["properties"][LSN] = {"type": ["null", "integer"]}
    return schema


@dataclasses.dataclass(frozen=True)
class ChangeOptions:
    """How every stream's changes of a WAL pass are read and rendered."""

    plugin: str  # wal2json or pgoutput
    debug_lsn: bool = False
    value_limit: ValueLimit | None = None  # max_value_bytes
    # the walsender prints dates and timestamps as local_render reads them (local_render.times_pinned)
    times_pinned: bool = False
    render_in_tap: bool = True  # render_changes_in_tap


@dataclasses.dataclass(frozen=True)
class RenderedLines:
    """RECORD lines the tap rendered itself (local_render), ready to be written in their turn."""

    lines: bytes
    rows: int


# What a stream hands the renderer: a COPY for the server to render, or lines rendered here.
Batch = sql.Composed | RenderedLines


class StreamChanges:
    """The pending changes of one stream, and the query that renders them."""

    def __init__(self, stream: SelectedStream, table: Table, columns: list[Column], version, options: ChangeOptions):
        self.stream = stream
        self.version = version
        self.debug_lsn = options.debug_lsn
        self.value_limit = options.value_limit.of(stream) if options.value_limit else None
        # a full row is `["F", [{"name", "value"}, ...]]` as wal2json wrote it, `["F", [value, ...]]` from pgoutput
        self.bare_values = options.plugin == "pgoutput"
        self._local_options = LocalOptions(options.times_pinned, self.debug_lsn, self.value_limit, options.plugin)
        self._render_in_tap = options.render_in_tap
        self._entries: list[bytes] = []
        self._size = 0
        self._fill = False
        # the record objects of the whole rows rendered here, and the batches closed before them, in order
        self._records: list[bytes] = []
        self._records_size = 0
        self._closed: list[Batch] = []
        # the column names of changes written before the table's columns last changed: once
        # found stale, a set of names stays so (reading it from the stored row is always right)
        self._stale: set[tuple] = set()
        self._warned_keyless = False
        self.adopt(table, columns)

    def adopt(self, table: Table, columns: list[Column], sent: tuple[str, ...] = ()) -> None:
        """Take the table as it is now, the columns to emit and, when a change has shown them, the names the plugin sends.

        pgoutput sends no generated column before PostgreSQL 18, nor on 18 unless its publication
        asks; `sent` counts only when it is the table's columns in order, less some generated ones.
        """
        self.table = table
        self.columns = columns
        names = tuple(column.name for column in table.columns)
        generated = {column.name for column in table.columns if column.generation}
        if sent and _in_order(sent, names) and set(names).difference(sent) <= generated:
            self.wal_names = tuple(sent)
        else:
            self.wal_names = tuple(c.name for c in table.columns if not (self.bare_values and c.generation))
        self._wal_name_set = set(self.wal_names)
        self._layouts: dict[tuple, str] = {}
        existing = {column.name for column in table.columns}
        self._gone = {column.name for column in columns if column.name not in existing}
        self._keys = [column for column in columns if column.name in table.primary_key]
        self._key_names = {column.name for column in self._keys}
        self._evaluated, self._inputs = generated_columns(table, columns, self._wal_name_set)
        # a column the table has but the plugin does not send, and that is not generated, is read from the row
        evaluated = {column.name for column in self._evaluated}
        self._always_fill = any(
            c.name not in self._wal_name_set and c.name not in self._gone and c.name not in evaluated for c in columns
        )
        self._local = None
        if self._render_in_tap and not (self._evaluated or self._gone or self._always_fill):
            self._local = LocalRows.of(columns, self.wal_names, self._local_options)

    @property
    def full(self) -> bool:
        """Tell whether a batch is ready: closed, or large enough to render now."""
        return (
            bool(self._closed)
            or len(self._entries) >= BATCH_CHANGES
            or self._size >= BATCH_BYTES
            or len(self._records) >= BATCH_CHANGES
            or self._records_size >= BATCH_BYTES
        )

    def layout_of(self, change: Change, described: bool = False) -> str:
        """Tell how a change's columns compare with the table's as the plugin sends it.

        IN_ORDER: the same names in the same order (read by position); BY_NAME: some of the table's
        columns in its order (an update that left unchanged TOAST values out, a change from before
        a column was added), or in any order from a partition (whose columns may have been created
        in another order); NEW_COLUMNS: anything else, until the table is `described` again; then
        STALE: a change written before the columns changed (see the module's rules).
        """
        if change.action == "D":
            self._check_key(change, change.message.get("identity") or [])
            return BY_NAME
        names = change.names
        if names == self.wal_names:
            return IN_ORDER
        layout_key = (names, change.relations[0])
        layout = self._layouts.get(layout_key) or (STALE if layout_key in self._stale else None)
        if layout is None:
            own = change.relations[0] == (self.table.schema_name, self.table.name)
            if self._wal_name_set.issuperset(names) and (not own or _in_order(names, self.wal_names)):
                layout = self._layouts[layout_key] = BY_NAME
            elif not described:
                return NEW_COLUMNS
            else:
                self._stale.add(layout_key)
                layout = STALE
        if layout == STALE:
            self._check_key(change, change.message["columns"])
        return layout

    def _check_key(self, change: Change, columns: list[dict]) -> None:
        """Refuse a change that lacks a column of the table's primary key as it is now: it names no row."""
        missing = self._key_names.difference(column["name"] for column in columns)
        if missing:
            raise ReplicationError(
                f"stream {self.stream.tap_stream_id}: a change at {change.lsn or 'a position'} lacks primary key "
                f"column(s) {', '.join(sorted(missing))} (renamed or added since it was written), so it names no row "
                "of the table as it is: remove the stream's bookmark from the state to copy it anew"
            )

    def add(self, change: Change, layout: str) -> None:
        """Queue one insert, update or delete for rendering: here when local_render can, else by the server (see `_add`).

        A change too long for the render query (its JSON past what the server can build) has its
        long values nulled first when max_value_bytes is set, and stops the run naming them when not.
        """
        if self._local is not None and layout == IN_ORDER and not self._deletes_key(change):
            values = change.values if self.bare_values else wal2json_values(change, self._local.number_texts)
            if values is not None and self.add_whole_row(values, change.lsn):
                return
        if self._records:
            self._closed.append(self._take_records())
        entries, size = len(self._entries), self._size
        self._add(change, layout)
        if self._size - size > LONGEST_ENTRY:
            del self._entries[entries:]
            self._size = size
            self._null_long_values(change)
            self._add(change, layout)

    @property
    def renders_whole_rows(self) -> bool:
        """Tell whether the tap renders this stream's whole-row inserts and updates (local_render)."""
        return self._local is not None

    @property
    def reads_whole_tuples(self) -> bool:
        """Tell whether add_whole_tuple takes this stream's whole-row pgoutput changes (local_render's tuple_record)."""
        return self._local is not None and self._local.reads_tuples

    def add_whole_row(self, values: list, lsn: str) -> bool:
        """Queue the record of a whole new row in the plugin's column order, rendered here; False when the server must.

        Only for a stream that renders_whole_rows, of a change that keeps its key (see `add`).
        """
        return self._add_record(self._local.record(values, lsn))

    def add_whole_tuple(self, payload: bytes, lsn: str) -> bool:
        """Queue the record of a pgoutput insert or update carrying only its whole new row, rendered from its bytes;
        False when the general path must take it. Only for a stream that reads_whole_tuples."""
        return self._add_record(self._local.tuple_record(payload, lsn))

    def _add_record(self, record: bytes | None) -> bool:
        if record is None or len(record) > LONGEST_ENTRY:
            return False
        if self._entries:
            self._closed.append(self._take_query())
        self._records.append(record)
        self._records_size += len(record)
        return True

    def _null_long_values(self, change: Change) -> None:
        """Null the change's values longer than max_value_bytes, or raise naming the longest one."""
        columns = change.message.get("columns") or change.message.get("identity") or []
        key = {c["name"]: c["value"] for c in columns if c["name"] in self._key_names}
        if self.value_limit is None:
            longest = max(columns, key=lambda c: len(c["value"] or ""))
            raise OversizeValueError(
                f'stream {self.stream.tap_stream_id}: the value of column "{longest["name"]}" in the change of '
                f"the row with key {json.dumps(key)} is {len(longest['value'] or '')} characters long, too long "
                f"for the server to render as JSON (a record over 1 GB): {OVERSIZE_WAY_ON}"
            )
        for column in columns:
            value = column["value"]
            if column["name"] in self.value_limit.exempt or not isinstance(value, str):
                continue
            if len(value) > self.value_limit.max_bytes and len(value.encode()) > self.value_limit.max_bytes:
                log_nulled(
                    self.stream.tap_stream_id, column["name"], key, len(value.encode()), self.value_limit.max_bytes
                )
                column["value"] = None
        if change.values is not None:
            change.values = [column["value"] for column in change.message["columns"]]
        change.forget_payload()

    def _add(self, change: Change, layout: str) -> None:
        """Queue one insert, update or delete for rendering.

        Each entry is tagged for the render query: `["F", columns, lsn]`, a full row in the table's
        column order, only its columns array (the server parses less), values read by position;
        `["P", message]`, an update that left unchanged TOAST values out, read by name and filled
        from the stored row; `["N", message]`, a full row in another order, read by name;
        `["D", message]`, a delete (its identity); `["S", message]`, a change written before the
        table's columns changed: its key, and every other value from the stored row.
        """
        lsn = [change.lsn] if self.debug_lsn else []
        if change.action == "D":
            self._append(b'["D",' + change.payload + b"]")
            return
        identity = None if change.whole_row else change.message.get("identity")
        if self._deletes_key(change):
            self._append(b'["D",' + change.payload + b"]")
        if layout == STALE:
            if not self._keys and not self._warned_keyless:
                self._warned_keyless = True
                LOGGER.warning(
                    "%s has no primary key: its changes written before its columns changed are read by column "
                    "name, and a renamed column's values in them are null; give it one",
                    self.stream.tap_stream_id,
                )
            self._fill = True
            self._append(b'["S",' + change.payload + b"]")
            return
        if layout != IN_ORDER:
            partial = len(change.names) < len(self.wal_names)
            self._fill = self._fill or partial
            self._append((b'["P",' if partial else b'["N",') + change.payload + b"]")
            return
        if self.bare_values:
            # pgoutput's whole row: its values, written by one call (no object per column), read by position.
            # Not orjson.dumps(["F", ...]) kept as it is: orjson's bytes hold a 4 KB buffer whatever their
            # length, so 100 streams' pending batches took 1.6 GB; the concatenation is the entry's size
            tail = b',"' + change.lsn.encode() + b'"]' if lsn else b"]"
            self._append(b'["F",' + orjson.dumps(change.values) + tail)
            return
        # wal2json writes "columns" before "identity"; a quote inside a value is always escaped
        payload = change.payload
        start = payload.index(b'"columns":[') + 10
        end = payload.rindex(b'],"identity":[') + 1 if identity else len(payload) - 1
        self._append(b'["F",' + payload[start:end] + (b',"' + change.lsn.encode() + b'"' if lsn else b"") + b"]")

    def _deletes_key(self, change: Change) -> bool:
        """Tell whether an insert or update changes the primary key, so a delete of the old key comes first."""
        identity = None if change.whole_row else change.message.get("identity")
        return bool(identity and self._key_names and self._key_changed(identity, change.message["columns"]))

    def _key_changed(self, identity: list[dict], columns: list[dict]) -> bool:
        keys = self._key_names
        old = [c["value"] for c in identity if c["name"] in keys]
        new = [c["value"] for c in columns if c["name"] in keys]
        return len(new) == len(keys) and old != new

    def _append(self, entry: bytes) -> None:
        self._entries.append(entry)
        self._size += len(entry)

    def take_batches(self) -> list[Batch]:
        """Return the pending changes as batches, in order (lines rendered here, COPYs for the server), and forget them."""
        if self._records:
            self._closed.append(self._take_records())
        if self._entries:
            self._closed.append(self._take_query())
        batches, self._closed = self._closed, []
        return batches

    def _take_records(self) -> RenderedLines:
        """Return the records rendered here as RECORD lines, in this moment's envelope, and forget them."""
        prefix, suffix = (
            part.encode() for part in record_envelope(self.stream.tap_stream_id, self.version, now_extracted())
        )
        lines = prefix + (suffix + b"\n" + prefix).join(self._records) + suffix + b"\n"
        rows = len(self._records)
        self._records = []
        self._records_size = 0
        return RenderedLines(lines, rows)

    def _take_query(self) -> sql.Composed:
        """Return the COPY that renders the changes pending for the server, and forget them."""
        batch = (b"[" + b",".join(self._entries) + b"]").decode()
        fill = (self._fill or self._always_fill) and bool(self._keys)
        envelope = record_envelope(self.stream.tap_stream_id, self.version, now_extracted())
        self._entries.clear()
        self._size = 0
        self._fill = False
        return self._render_query(fill, envelope, batch)

    def _render_query(self, fill: bool, envelope: tuple[str, str], batch: str) -> sql.Composed:
        """Return the COPY that renders a batch (JSON text of `[tag, message]` entries) in order.

        Each change is read into typed values once (the LATERAL subquery, kept apart by OFFSET 0),
        then rendered like a FULL_TABLE row.
        """
        rendered = [rendered_columns(self.columns, relation="typed", limit=self.value_limit)]
        rendered.append(
            sql.SQL("CASE WHEN change.entry->>0 = 'D' THEN {} END AS {}").format(
                render_column(_COMMIT_COLUMN, _COMMIT_TIME_SQL), sql.Identifier(DELETED_AT)
            )
        )
        if self.debug_lsn:
            rendered.append(sql.SQL("{} AS {}").format(_CHANGE_LSN_SQL, sql.Identifier(LSN)))
        typed = self._typed_relation(fill)
        stored_row = sql.SQL("")
        if fill:
            stored_row = sql.SQL("LEFT JOIN {} AS stored ON change.entry->>0 IN ('P', 'S') AND {} = {}").format(
                sql.Identifier(self.table.schema_name, self.table.name),
                row_of(compared(k, sql.Identifier("stored", k.name)) for k in self._keys),
                row_of(compared(k, self._wal_value(k, by_position=False)) for k in self._keys),
            )
        query = sql.SQL(
            "SELECT {} FROM jsonb_array_elements({}::jsonb) WITH ORDINALITY AS change(entry, n) {} "
            "CROSS JOIN LATERAL ({}) AS typed {}"
        ).format(
            sql.SQL(", ").join(rendered),
            sql.Literal(batch),
            stored_row,
            typed,
            # the function scan returns the batch in order; only the join to the stored rows may not
            sql.SQL("ORDER BY change.n") if fill else sql.SQL(""),
        )
        return copy_records(envelope, query)

    def _typed_relation(self, fill: bool) -> sql.Composable:
        """Return the query of one change's typed values, by column name (the LATERAL `typed`).

        A generated column the plugin does not send is its expression, evaluated over the
        change's own values: the query of the other values (and of the expression's inputs the
        stream does not emit) is the FROM of the one that evaluates it, so the expression's bare
        column names resolve to them.
        """
        evaluated = {column.name for column in self._evaluated}
        read = [column for column in self.columns if column.name not in evaluated] + self._inputs
        values = sql.SQL("SELECT {} OFFSET 0").format(
            sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(self._typed_value(column, fill), sql.Identifier(column.name))
                for column in read
            )
        )
        if not self._evaluated:
            return values
        return sql.SQL("SELECT inputs.*, {} FROM ({}) AS inputs OFFSET 0").format(
            sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(self._generated_value(column), sql.Identifier(column.name))
                for column in self._evaluated
            ),
            values,
        )

    def _generated_value(self, column: Column) -> sql.Composable:
        """Return a generated column's expression over the change's values; in a delete, over the old row's.

        A delete carries the replica identity: with REPLICA IDENTITY FULL the column has its old
        value, as wal2json sends a stored one; else it is null like every column outside the key.
        pgoutput says which identity it sent; a wal2json delete (only a virtual column is evaluated
        for it) counts as FULL when it has every input.
        """
        generation = column.generation
        value = sql.SQL("CAST(({}) AS {})").format(sql.SQL(generation.expression), sql.SQL(generation.type_sql))
        in_identity = [
            sql.SQL("jsonb_path_exists(change.entry->1->'identity', '$[*] ? (@.name == $n)', {})").format(
                sql.Literal(json.dumps({"n": name}))
            )
            for name in generation.inputs
        ]
        full = sql.SQL("coalesce((change.entry->1->>'identity_full')::boolean, {})").format(
            sql.SQL(" AND ").join(in_identity) if in_identity else sql.SQL("false")
        )
        return sql.SQL("CASE WHEN change.entry->>0 <> 'D' THEN {} WHEN {} THEN {} END").format(value, full, value)

    def _typed_value(self, column: Column, fill: bool) -> sql.Composable:
        """Return the change's value of `column` read into the column's type."""
        if column.name in self._gone:
            return sql.SQL("NULL::{}").format(types.base_type_sql(column.type) or sql.Identifier(*column.type_name))
        by_name = self._wal_value(column, by_position=False)
        if fill:
            stored = sql.Identifier("stored", column.name)
            by_name = sql.SQL("coalesce({}, {})").format(by_name, stored)
            if column.name not in self._key_names:
                by_name = sql.SQL("CASE WHEN change.entry->>0 = 'S' THEN {} ELSE {} END").format(stored, by_name)
        if column.name not in self._wal_name_set:
            return by_name
        return sql.SQL("CASE WHEN change.entry->>0 = 'F' THEN {} ELSE {} END").format(
            self._wal_value(column, by_position=True), by_name
        )

    def _wal_value(self, column: Column, *, by_position: bool) -> sql.Composable:
        """Return SQL of the column's value in the change, by its position in a full row or else by name."""
        if by_position:
            position = sql.Literal(self.wal_names.index(column.name))
            if self.bare_values:
                text = sql.SQL("(change.entry->1->>{})").format(position)
            else:
                text = sql.SQL("(change.entry->1->{}->>'value')").format(position)
        else:
            # a delete's value is the old row's (its identity); an update's is the new row's, else
            # the old row's (a FULL replica identity has every column, TOASTed ones included)
            path = sql.Literal("$[*] ? (@.name == $n).value")
            name = sql.Literal(json.dumps({"n": column.name}))
            text = sql.SQL(
                "((CASE WHEN change.entry->>0 = 'D' THEN {old} ELSE coalesce({new}, {old}) END) #>> '{{}}')"
            ).format(
                old=sql.SQL("jsonb_path_query_first(change.entry->1->'identity', {}, {})").format(path, name),
                new=sql.SQL("jsonb_path_query_first(change.entry->1->'columns', {}, {})").format(path, name),
            )
        return types.wal2json_value_sql(column.type, text, sql.Identifier(*column.type_name))


# A stand-in column whose type renders the commit time like every other timestamptz.
_COMMIT_COLUMN = Column(
    name=DELETED_AT,
    sql_datatype="timestamp with time zone",
    type_name=("pg_catalog", "timestamptz"),
    type=_COMMIT_TIME,
    not_null=False,
    description=None,
    selectable=True,
)


def _in_order(names: tuple[str, ...], table_names: tuple[str, ...]) -> bool:
    """Tell whether `names` are some of `table_names` in the same order."""
    remaining = iter(table_names)
    return all(name in remaining for name in names)


def generated_columns(table: Table, columns: list[Column], sent: set[str]) -> tuple[list[Column], list[Column]]:
    """Return the emitted generated columns the render query evaluates, and the inputs it reads beyond `columns`.

    A stored generated column the plugin sends is read like any other; a virtual one (18) is
    evaluated even when sent, as its value is never in the WAL.
    """
    current = {column.name: column for column in table.columns}
    evaluated = [
        current[column.name]
        for column in columns
        if column.name in current
        and current[column.name].generation is not None
        and (column.name not in sent or current[column.name].generation.kind == "v")
    ]
    emitted = {column.name for column in columns}
    inputs: list[Column] = []
    for column in evaluated:
        for name in column.generation.inputs:
            if name not in emitted and name in current and current[name] not in inputs:
                inputs.append(current[name])
    return evaluated, inputs


def with_new_columns(
    stream: SelectedStream, table: Table, wal_names: list[str], columns: list[Column], tap_properties: tuple[str, ...]
):
    """Return the stream and columns widened by the table's columns that appeared since the catalog was made.

    A new column named like one of the tap's own properties is left out, as the catalog's are.
    """
    known = {column.name for column in columns}
    added = [
        column
        for column in table.columns
        if column.name in wal_names
        and column.name not in known
        and column.name not in stream.schema["properties"]
        and column.name not in stream.catalog_columns
    ]
    for column in [column for column in added if column.name in tap_properties]:
        LOGGER.warning(
            'New column "%s" of %s is named like a property the tap adds to LOG_BASED records: leaving it out',
            column.name,
            stream.tap_stream_id,
        )
        added.remove(column)
    supported = [column for column in added if column.type is not None and types.family_of(column.type)]
    for column in added:
        if column not in supported:
            LOGGER.warning(
                'New column "%s" of %s has type %s, which the tap cannot emit: leaving it out',
                column.name,
                stream.tap_stream_id,
                column.sql_datatype,
            )
    if not supported:
        return stream, columns
    properties = dict(stream.schema["properties"])
    for column in supported:
        properties[column.name] = types.json_schema(column.type, nullable=True)
    LOGGER.info("%s: new columns %s", stream.tap_stream_id, ", ".join(column.name for column in supported))
    schema = {**stream.schema, "properties": properties}
    widened = dataclasses.replace(stream, columns=[*stream.columns, *(c.name for c in supported)], schema=schema)
    return widened, [*columns, *supported]


class BatchRenderer:
    """Renders batches on two sessions at once and writes their lines in the order they were given.

    The server's rendering is the bottleneck, and psycopg2 releases the GIL while it waits, so
    one batch renders while the next is read from the WAL and another renders on the second session.
    Checkpoints queue behind the batches before them, so a STATE never overtakes its records.
    """

    def __init__(self, sessions: list[extensions.connection], sink: RecordSink):
        self._cursors = [session.cursor() for session in sessions]
        self._sink = sink
        self._pool = ThreadPoolExecutor(max_workers=len(self._cursors))
        self._queue: deque[Future | Callable[[], None]] = deque()
        self._rendering = 0
        self._next = 0

    def submit(self, batches: list[Batch]) -> None:
        """Start rendering each batch, first writing older ones while every session is busy; lines rendered here wait their turn."""
        for batch in batches:
            if isinstance(batch, RenderedLines):
                self._queue.append(functools.partial(self._sink.emit_batch, batch.lines, batch.rows))
                self.write_ready()
            else:
                self._submit_query(batch)

    def _submit_query(self, query: sql.Composed) -> None:
        while self._rendering == len(self._cursors):
            self._write_oldest()
        cursor = self._cursors[self._next % len(self._cursors)]
        self._next += 1
        self._queue.append(self._pool.submit(copy_to_bytes, cursor, query))
        self._rendering += 1

    def submit_checkpoint(self, checkpoint: Callable[[], None]) -> None:
        """Run `checkpoint` (it moves bookmarks, writes STATE) once every batch given before it is written."""
        self._queue.append(checkpoint)
        self.write_ready()

    @property
    def holding(self) -> bool:
        """Tell whether some batch or checkpoint given is not written or run yet."""
        return bool(self._queue)

    def write_ready(self) -> None:
        """Write the lines and run the checkpoints at the head of the queue, up to the first batch still rendering."""
        while self._queue and (not isinstance(self._queue[0], Future) or self._queue[0].done()):
            self._write_oldest()

    def drain(self) -> None:
        """Write every batch and run every checkpoint given so far."""
        while self._queue:
            self._write_oldest()

    def _write_oldest(self) -> None:
        item = self._queue.popleft()
        if isinstance(item, Future):
            self._rendering -= 1
            self._sink.emit_batch(*item.result())
        else:
            item()

    def close(self) -> None:
        """Stop the worker threads (after a failure, the batches in flight are dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
