"""Values too long to emit: `max_value_bytes` nulls them with a warning; without it, one line names them.

The server renders each record whole (rows.py), so the server also nulls: with the setting, the
render of each column whose values can be long becomes `CASE WHEN <its length> > max_value_bytes
THEN <marker> ELSE <render> END`. The marker is a JSON string no value can hold (it starts with
\\u0000, which text cannot, and carries a token drawn for the run) and the value's length. The sink
looks for it in each block it writes (one `in`, C speed), writes null in its place, and logs the
stream, column, key and length. No Python runs per row, and key columns are never nulled.

Without the setting, a record whose JSON passes the server's limit (1 GB) fails with SQLSTATE
54000 and no name; `naming_oversize_values` then finds the row and column by their lengths and
stops the run with one line naming them and the way on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import secrets
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.discovery import Column
from tap_postgres.errors import OversizeValueError
from tap_postgres.output import RECORD_PREFIX

LOGGER = logging.getLogger("tap-postgres")

# MaxAllocSize: the longest text (a whole RECORD line) the server can build
MAX_RENDERED_BYTES = (1 << 30) - 1
# JSON escaping makes one byte at most six (\u0001): a row whose values' text is shorter in all
# cannot pass the limit, so the search for the culprit looks only at longer ones
_LONGEST_SAFE_ROW = MAX_RENDERED_BYTES // 6
# A LOG_BASED change whose JSON entry is longer cannot go into the render query (changes.py)
LONGEST_ENTRY = MAX_RENDERED_BYTES - (1 << 20)
EXAMPLE_LIMIT = 100_000_000
OVERSIZE_WAY_ON = (
    "deselect the column in the catalog, or set max_value_bytes (for example "
    f"{EXAMPLE_LIMIT}) to emit null for such values with a warning"
)


@dataclasses.dataclass(frozen=True)
class StreamValueLimit:
    """The limit as one stream's render queries apply it: every column but the key ones."""

    max_bytes: int
    marker_prefix: str
    exempt: frozenset[str]

    def applies_to(self, column: Column) -> bool:
        """Tell whether the column's values are nulled when long (never a key or a replication key)."""
        return column.name not in self.exempt and column.type is not None and types.may_be_long(column.type)

    def render(self, column: Column, value: sql.Composable, rendered: sql.Composable) -> sql.Composable:
        """Return the column's render, with the marker and the value's length in place of a long value."""
        if not self.applies_to(column):
            return rendered
        length = types.text_length_sql(column.type, value, rendered)
        return sql.SQL(
            "CASE WHEN {length} > {limit} THEN ({prefix} || {length} || '\"')::json ELSE to_json({r}) END"
        ).format(length=length, limit=sql.Literal(self.max_bytes), prefix=sql.Literal(self.marker_prefix), r=rendered)

    def nullable_schema(self, schema: dict, columns: list[Column]) -> dict:
        """Return the stream's schema with null allowed for every column the limit may null."""
        nulled = {column.name for column in columns if self.applies_to(column)}
        properties = {
            name: types.with_null(prop) if name in nulled else prop for name, prop in schema["properties"].items()
        }
        return {**schema, "properties": properties}


class ValueLimit:
    """`max_value_bytes` for one run: the marker its render queries write and the sink replaces."""

    def __init__(self, max_bytes: int, streams: list[SelectedStream]):
        self.max_bytes = max_bytes
        token = secrets.token_hex(8)
        # as JSON text: a string starting with \u0000, then the token, then the value's length
        self._prefix = '"\\u0000tap-postgres-oversize-' + token + ":"
        self.marker = self._prefix.encode()
        self._pattern = re.compile(re.escape(self.marker) + rb'(\d+)"')
        self._streams = {stream.tap_stream_id: stream for stream in streams}

    def of(self, stream: SelectedStream) -> StreamValueLimit:
        """Return the limit as `stream`'s render queries apply it."""
        exempt = {*stream.key_properties, *([stream.replication_key] if stream.replication_key else [])}
        return StreamValueLimit(self.max_bytes, self._prefix, frozenset(exempt))

    def replace_markers(self, block: bytes, stream_id: str) -> bytes:
        """Return `block` (whole RECORD lines, or a BATCH file's record lines of `stream_id`) with null for
        each marker, logging what each one stood for."""
        lines = block.split(b"\n")
        for n, line in enumerate(lines):
            if self.marker in line:
                self._warn(line, stream_id)
                lines[n] = self._pattern.sub(b"null", line)
        return b"\n".join(lines)

    def _warn(self, line: bytes, stream_id: str) -> None:
        message = json.loads(line, parse_float=str)
        if line.startswith(RECORD_PREFIX):
            stream_id, record = message["stream"], message["record"]
        else:  # a BATCH file's line: the record object alone
            record = message
        stream = self._streams.get(stream_id)
        key = {name: record.get(name) for name in stream.key_properties} if stream else {}
        prefix = self._prefix[1:].encode().decode("unicode_escape")
        for name, value in record.items():
            if isinstance(value, str) and value.startswith(prefix):
                log_nulled(stream_id, name, key, int(value[len(prefix) :]), self.max_bytes)


def log_nulled(stream_id: str, column: str, key: dict, length: int, max_bytes: int) -> None:
    """Log that a value longer than max_value_bytes was emitted as null, naming where it was."""
    LOGGER.warning(
        '%s: column "%s" of the row with key %s is %d bytes long, over max_value_bytes (%d): emitted as null',
        stream_id,
        column,
        json.dumps(key) if key else "(none: the table has no primary key)",
        length,
        max_bytes,
    )


@contextlib.contextmanager
def naming_oversize_values(
    conn: extensions.connection, stream: SelectedStream, columns: list[Column]
) -> Iterator[None]:
    """Turn the server's SQLSTATE 54000 while rendering a stream into one line naming the long value."""
    try:
        yield
    except psycopg2.errors.ProgramLimitExceeded:
        conn.rollback()
        raise OversizeValueError(_describe_longest(conn, stream, columns)) from None


def _describe_longest(conn: extensions.connection, stream: SelectedStream, columns: list[Column]) -> str:
    """Find the stream's longest row past the safe length and say which value is too long, and what to do."""
    way_on = OVERSIZE_WAY_ON
    long_columns = [column for column in columns if column.type is not None and types.may_be_long(column.type)]
    found = _longest_row(conn, stream, long_columns) if long_columns else None
    if found is None:
        return (
            f"stream {stream.tap_stream_id}: a record is longer than the server can render as JSON (1 GB, "
            f"SQLSTATE 54000): {way_on.replace('the column', 'its longest columns')}"
        )
    key, column, length = found
    return (
        f'stream {stream.tap_stream_id}: the value of column "{column}" in the row with {key} is {length} bytes '
        f"long, too long for the server to render as JSON (a record over 1 GB, SQLSTATE 54000): {way_on}"
    )


def _longest_row(conn, stream: SelectedStream, columns: list[Column]) -> tuple[str, str, int] | None:
    """Return (the row's key, its longest column, that length) of the stream's longest row past the safe length."""
    lengths = [
        sql.SQL("coalesce({}, 0)").format(
            types.text_length_sql(column.type, sql.Identifier("source", column.name), None)
        )
        for column in columns
    ]
    total = sql.SQL(" + ").join(sql.SQL("{}::bigint").format(length) for length in lengths)
    if stream.key_properties:
        key = sql.SQL("json_build_object({})::text").format(
            sql.SQL(", ").join(
                sql.SQL("{}, {}").format(sql.Literal(name), sql.Identifier("source", name))
                for name in stream.key_properties
            )
        )
    else:
        key = sql.SQL("'ctid ' || source.ctid::text")
    query = sql.SQL("SELECT {}, ARRAY[{}] FROM {} AS source WHERE {} > {} ORDER BY {} DESC LIMIT 1").format(
        key,
        sql.SQL(", ").join(lengths),
        sql.Identifier(stream.schema_name, stream.table_name),
        total,
        sql.Literal(_LONGEST_SAFE_ROW),
        total,
    )
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        return None
    key_text, row_lengths = row
    longest = max(range(len(columns)), key=lambda n: row_lengths[n])
    # json_build_object writes `{"id" : 2}`: written again as the warnings write keys
    where = key_text if key_text.startswith("ctid ") else f"key {json.dumps(json.loads(key_text))}"
    return where, columns[longest].name, row_lengths[longest]
