"""The wal2json changes of one LOG_BASED stream, rendered into RECORD lines by the server like FULL_TABLE rows.

wal2json prints every value as PostgreSQL text (json and arrays included), and Python never looks
at the values: a batch of raw wal2json messages goes back to the server, which reads each value
into its column's type (`(v->>'col')::type`) and renders it with the same `types.render_sql`
expression FULL_TABLE uses. Both methods therefore emit byte-identical values, and no float or
JSON number passes through Python on the way.

Rules (documented in the README):
- a delete emits the primary key columns (all columns when the table has none) and
  `_sdc_deleted_at`, the commit time; inserts and updates emit `_sdc_deleted_at` null;
- an update that changes the primary key emits a delete of the old key first;
- a column an update leaves out (wal2json omits unchanged TOASTed values) takes the value of the
  old row when the replica identity is FULL, else the row's current value read by primary key
  when the batch is rendered. It is never emitted as NULL while the row exists; if the row has
  been deleted since, the delete follows later in the stream.
"""

from __future__ import annotations

import dataclasses
import logging

from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column, Table
from tap_postgres.output import now_extracted, record_envelope
from tap_postgres.sync.rows import COPY_OPTIONS, RecordSink, render_column, rendered_columns

LOGGER = logging.getLogger("tap-postgres")

BATCH_CHANGES = 5000
BATCH_BYTES = 8 << 20

DELETED_AT = "_sdc_deleted_at"
LSN = "_sdc_lsn"
_COMMIT_TIME = types.ColumnType(base_name="timestamptz", base_kind="b", base_category="D")

# Each entry of a batch is `[action, wal2json message]`; the values of a change as one object,
# the old row's (identity) first so the new row's values win.
_CHANGE_VALUES = sql.SQL(
    "(SELECT coalesce(jsonb_object_agg(e->>'name', e->'value'), '{}'::jsonb) FROM jsonb_array_elements("
    "CASE change.entry->>0 WHEN 'D' THEN change.entry->1->'identity' "
    "ELSE coalesce(change.entry->1->'identity', '[]'::jsonb) || (change.entry->1->'columns') END) AS e)"
)
_COMMIT_TIME_SQL = sql.SQL("(change.entry->1->>'timestamp')::timestamptz")
_CHANGE_LSN_SQL = sql.SQL("((change.entry->1->>'lsn')::pg_lsn - '0/0')::bigint")


def log_based_schema(stream: SelectedStream, debug_lsn: bool) -> dict:
    """Return the stream's JSON schema with the properties LOG_BASED adds to every record."""
    schema = dict(stream.schema)
    schema["properties"] = dict(schema["properties"])
    schema["properties"][DELETED_AT] = {"type": ["null", "string"], "format": "date-time"}
    if debug_lsn:
        schema["properties"][LSN] = {"type": ["null", "integer"]}
    return schema


class StreamChanges:
    """The pending changes of one stream, and the query that renders them."""

    def __init__(self, stream: SelectedStream, table: Table, columns: list[Column], version, debug_lsn: bool):
        self.stream = stream
        self.version = version
        self.debug_lsn = debug_lsn
        self._entries: list[bytes] = []
        self._size = 0
        self._fill = False
        self.adopt(table, columns, [column.name for column in table.columns])

    def adopt(self, table: Table, columns: list[Column], wal_names: list[str]) -> None:
        """Take the table as it is now, the columns to emit and the column names wal2json sends."""
        self.table = table
        self.columns = columns
        self.wal_names = wal_names
        self._wal_name_set = set(wal_names)
        existing = {column.name for column in table.columns}
        self._gone = {column.name for column in columns if column.name not in existing}
        self._keys = [column for column in columns if column.name in table.primary_key]
        self._key_names = {column.name for column in self._keys}
        # columns the table has but wal2json never sends (generated columns) are read from the row
        self._always_fill = any(c.name not in self._wal_name_set and c.name not in self._gone for c in columns)

    @property
    def pending(self) -> int:
        """The number of changes waiting to be rendered."""
        return len(self._entries)

    @property
    def full(self) -> bool:
        """Tell whether the batch is large enough to render now."""
        return len(self._entries) >= BATCH_CHANGES or self._size >= BATCH_BYTES

    def columns_changed(self, action: str, message: dict) -> bool:
        """Tell whether a change's columns differ from the table's, other than TOAST values left out."""
        if action == "D":
            return False
        names = [column["name"] for column in message["columns"]]
        if names == self.wal_names:
            return False
        if action == "U" and self._wal_name_set.issuperset(names):
            return False
        return True

    def add(self, action: str, message: dict, payload: bytes) -> None:
        """Queue one insert, update or delete (its raw wal2json text) for rendering."""
        if action == "U":
            if len(message["columns"]) < len(self.wal_names):
                self._fill = True
            identity = message.get("identity")
            if identity and self._key_names and self._key_changed(identity, message["columns"]):
                self._append(b'["D",' + payload + b"]")
        self._append(b'["' + action.encode() + b'",' + payload + b"]")

    def _key_changed(self, identity: list[dict], columns: list[dict]) -> bool:
        old = {c["name"]: c["value"] for c in identity if c["name"] in self._key_names}
        new = {c["name"]: c["value"] for c in columns if c["name"] in self._key_names}
        return len(new) == len(self._key_names) and old != new

    def _append(self, entry: bytes) -> None:
        self._entries.append(entry)
        self._size += len(entry)

    def render(self, cur: extensions.cursor, sink: RecordSink) -> int:
        """Render the pending changes into RECORD lines through `sink`; return how many were written."""
        if not self._entries:
            return 0
        batch = (b"[" + b",".join(self._entries) + b"]").decode()
        fill = (self._fill or self._always_fill) and bool(self._keys)
        envelope = record_envelope(self.stream.tap_stream_id, self.version, now_extracted())
        query = self._render_query(fill, envelope, batch)
        self._entries.clear()
        self._size = 0
        self._fill = False
        return sink.copy(cur, query)

    def _render_query(self, fill: bool, envelope: tuple[str, str], batch: str) -> sql.Composed:
        """Return the COPY that renders a batch (JSON text of `[action, message]` entries) in order."""
        typed = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(self._typed_value(column, fill), sql.Identifier(column.name))
            for column in self.columns
        )
        stored_row = sql.SQL("")
        if fill:
            stored_row = sql.SQL("LEFT JOIN {} AS stored ON change.entry->>0 <> 'D' AND {} = {}").format(
                sql.Identifier(self.table.schema_name, self.table.name),
                _row(sql.SQL("stored.{}").format(sql.Identifier(k.name)) for k in self._keys),
                _row(self._wal_value(k) for k in self._keys),
            )
        delete_columns = self._keys or self.columns
        return sql.SQL(
            "COPY (SELECT {} || CASE WHEN change.entry->>0 = 'D' THEN {} ELSE {} END || {} "
            "FROM jsonb_array_elements({}::jsonb) WITH ORDINALITY AS change(entry, n) "
            "CROSS JOIN LATERAL (SELECT {} AS v) AS wal {} "
            "CROSS JOIN LATERAL (SELECT {} OFFSET 0) AS source "
            "ORDER BY change.n) TO STDOUT {}"
        ).format(
            sql.Literal(envelope[0]),
            self._record_object(delete_columns, deleted=True),
            self._record_object(self.columns, deleted=False),
            sql.Literal(envelope[1]),
            sql.Literal(batch),
            _CHANGE_VALUES,
            stored_row,
            typed,
            COPY_OPTIONS,
        )

    def _typed_value(self, column: Column, fill: bool) -> sql.Composable:
        """Return the change's value of `column` read into the column's type."""
        if column.name in self._gone:
            return sql.SQL("NULL::{}").format(sql.SQL(column.cast_sql))
        value = self._wal_value(column)
        if fill:
            return sql.SQL("CASE WHEN wal.v ? {} THEN {} ELSE stored.{} END").format(
                sql.Literal(column.name), value, sql.Identifier(column.name)
            )
        return value

    @staticmethod
    def _wal_value(column: Column) -> sql.Composable:
        text = sql.SQL("wal.v->>{}").format(sql.Literal(column.name))
        return sql.SQL(types.wal2json_value_sql(column.type, "{text}", column.cast_sql)).format(text=text)

    def _record_object(self, columns: list[Column], *, deleted: bool) -> sql.Composable:
        """Return SQL of one record's JSON text, with the LOG_BASED properties."""
        commit_time = render_column(_COMMIT_COLUMN, _COMMIT_TIME_SQL) if deleted else sql.SQL("NULL")
        extra = [sql.SQL("{} AS {}").format(commit_time, sql.Identifier(DELETED_AT))]
        if self.debug_lsn:
            extra.append(sql.SQL("{} AS {}").format(_CHANGE_LSN_SQL, sql.Identifier(LSN)))
        return sql.SQL("(SELECT row_to_json(r)::text FROM (SELECT {}) AS r)").format(rendered_columns(columns, extra))


def _row(items) -> sql.Composable:
    """Return `(a, b)` for several items and `a` for one, for a row comparison."""
    items = list(items)
    joined = sql.SQL(", ").join(items)
    return sql.SQL("({})").format(joined) if len(items) > 1 else joined


# A stand-in column whose type renders the commit time like every other timestamptz.
_COMMIT_COLUMN = Column(
    name=DELETED_AT,
    sql_datatype="timestamp with time zone",
    cast_sql="timestamp with time zone",
    type=_COMMIT_TIME,
    not_null=False,
    description=None,
    selectable=True,
)


def with_new_columns(stream: SelectedStream, table: Table, wal_names: list[str], columns: list[Column]):
    """Return the stream and columns widened by the table's columns that appeared since the catalog was made."""
    known = {column.name for column in columns}
    added = [
        column
        for column in table.columns
        if column.name in wal_names and column.name not in known and column.name not in stream.schema["properties"]
    ]
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
