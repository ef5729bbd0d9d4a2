"""The LOG_BASED values the tap renders itself, from pgoutput's text, and the one place that says which those are.

The server renders every value the tap emits (types.render_sql), and for LOG_BASED that meant
each change went back to the primary to be rendered, costing it more CPU than decoding. Some
families' text, as the walsender prints it, maps to the server's JSON by a fixed rule, so the
tap writes those itself, byte for byte as row_to_json would:

- integers and oid: the text is the JSON number;
- numeric: the text is the JSON number (numeric_out never writes an exponent); NaN and the
  infinities become null;
- real and double precision: the text is the JSON number (float4out and float8out, at the
  extra_float_digits both connections pin, write the shortest exact digits, an exponent as
  `1e+20`, which JSON reads); -0 becomes 0 (types._FINITE_FLOAT), NaN and the infinities null;
- jsonb: its text (jsonb_out, which to_json calls too) is the JSON value;
- boolean: `t` and `f` are true and false;
- text, varchar, char(n) (its padding kept), citext, name, uuid, inet, cidr, macaddr, macaddr8,
  tsvector, tsquery and enums: the text as a JSON string, which orjson escapes as PostgreSQL's
  escape_json does (\\b \\f \\n \\r \\t \\" \\\\, other control characters as \\u00XX,
  everything else as it is);
- date, timestamp, timestamptz: ISO 8601 with a `+00:00` offset, clamped as types.py says;
  interval: its text as a JSON string. These hold only while the walsender prints them in UTC with
  DateStyle ISO and IntervalStyle iso_8601, which the replication connection's startup options pin
  (connection.SESSION_SETTINGS) and its ParameterStatus confirms.

A domain renders as its base type does. Arrays and every other family stay the server's.

wal2json writes the same texts inside its JSON, which the tap has already parsed to route the
change: as strings, except the values of integer, oid and boolean columns (JSON numbers and
booleans, which orjson reads exactly and writes back as they were) and of numeric, real and
double precision columns (a JSON number, or null for NaN and the infinities), whose text the tap
cuts out of the message, since a double would lose a numeric's digits and scale and write a float
in its own way. A jsonb value is a string of its text. A domain's values are strings (wal2json
looks at the column's own type, not its base).

A stream whose every emitted column is in these families has its whole-row inserts and updates rendered here;
its other changes (deletes, key changes, updates missing a TOASTed value, changes from before its
columns changed) go to the server, in order. The generative suite checks the bytes against
FULL_TABLE's, and tests/test_local_render.py checks each family's values against render_sql.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping

import orjson

from tap_postgres import types
from tap_postgres.catalog import DELETED_AT, LSN
from tap_postgres.discovery import Column
from tap_postgres.state import lsn_to_int
from tap_postgres.sync.decoders import whole_row_json
from tap_postgres.sync.oversize import StreamValueLimit

_DIGITS = frozenset("0123456789")
_BOOLEANS = {"t": True, "f": False}


def _numeric(text: str) -> orjson.Fragment | None:
    """A finite numeric's text (it always ends with a digit) is its JSON; NaN and the infinities are null."""
    return orjson.Fragment(text) if text[-1] in _DIGITS else None


_ZERO = orjson.Fragment("0")


def _float(text: str) -> orjson.Fragment | None:
    """A finite float's text is its JSON, but for -0, which FULL_TABLE emits as 0; NaN and the infinities are null."""
    if text[-1] not in _DIGITS:
        return None
    return _ZERO if text == "-0" else orjson.Fragment(text)


def _out_of_range(text: str) -> str:
    """The clamped value of a date or timestamp outside the years 1 to 9999: BC and -infinity before, the rest after."""
    return types.TIMESTAMP_BEFORE_RANGE if text[-1] == "C" or text[0] == "-" else types.TIMESTAMP_AFTER_RANGE


def _timestamptz(text: str) -> str:
    """`2024-01-02 03:04:05.5+00` (UTC, ISO) is `2024-01-02T03:04:05.5+00:00`; a 5-digit year, BC or infinity is clamped."""
    if text[4] == "-" and text[-1] == "0":
        return text[:10] + "T" + text[11:] + ":00"
    return _out_of_range(text)


def _timestamp(text: str) -> str:
    """`2024-01-02 03:04:05.5` is read as UTC: `2024-01-02T03:04:05.5+00:00`."""
    if text[4] == "-" and text[-1] != "C":
        return text[:10] + "T" + text[11:] + "+00:00"
    return _out_of_range(text)


def _date(text: str) -> str:
    """`2024-01-02` is midnight UTC: `2024-01-02T00:00:00+00:00`."""
    if len(text) == 10 and text[4] == "-":
        return text + "T00:00:00+00:00"
    return _out_of_range(text)


# A family's reader turns the walsender's text of a value into what orjson writes; None: the text as a string.
_AS_STRING = None
# wal2json's integers and booleans, as orjson read them, are written back as they were.
_AS_PARSED = None
# An integer's text is its JSON: orjson.Fragment writes it as it is (a C call, no Python frame).
_READERS: dict[str, Callable[[str], object] | None] = {
    "int2": orjson.Fragment,
    "int4": orjson.Fragment,
    "int8": orjson.Fragment,
    "oid": orjson.Fragment,
    "numeric": _numeric,
    "float4": _float,
    "float8": _float,
    "jsonb": orjson.Fragment,
    "bool": _BOOLEANS.__getitem__,
    "text": _AS_STRING,
    "varchar": _AS_STRING,
    "bpchar": _AS_STRING,
    "citext": _AS_STRING,
    "name": _AS_STRING,
    "uuid": _AS_STRING,
    "inet": _AS_STRING,
    "cidr": _AS_STRING,
    "macaddr": _AS_STRING,
    "macaddr8": _AS_STRING,
    "tsvector": _AS_STRING,
    "tsquery": _AS_STRING,
}
_TIME_READERS = {"date": _date, "timestamp": _timestamp, "timestamptz": _timestamptz, "interval": _AS_STRING}
_ENUM_KIND = "e"
_UNKNOWN = object()

# What the walsender must print dates, timestamps and intervals in for _TIME_READERS to hold.
TIME_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "iso_8601"}


# wal2json's JSON values of these base types are what the server renders, once orjson has read them
_WAL2JSON_PARSED = frozenset({"int2", "int4", "int8", "oid", "bool"})
# and those of these are JSON numbers whose text the tap takes from the message (decoders.wal2json_values)
_WAL2JSON_NUMBER_TEXT = frozenset({"numeric", "float4", "float8"})


def reader_of(column: types.ColumnType, times_pinned: bool, plugin: str = "pgoutput") -> Callable | None | object:
    """Return how the tap renders a column's value as the plugin sent it (None: as it is), or _UNKNOWN when the server must.

    `times_pinned`: the walsender prints dates, timestamps and intervals in TIME_SETTINGS.
    """
    if column.is_array:
        return _UNKNOWN
    if plugin == "wal2json" and not column.domain_base and column.base_name in _WAL2JSON_PARSED:
        return _AS_PARSED
    if column.base_kind == _ENUM_KIND:
        return _AS_STRING
    if column.base_name in _READERS:
        return _READERS[column.base_name]
    if times_pinned and column.base_name in _TIME_READERS:
        return _TIME_READERS[column.base_name]
    return _UNKNOWN


def times_pinned(settings: Mapping[str, str | None]) -> bool:
    """Tell whether a walsender's reported settings (ParameterStatus) are the ones dates, timestamps and intervals are read in."""
    return all(settings.get(name) == value for name, value in TIME_SETTINGS.items())


@dataclasses.dataclass(frozen=True)
class LocalOptions:
    """What decides how one stream's values render here."""

    times_pinned: bool  # the walsender prints dates, timestamps and intervals in TIME_SETTINGS
    debug_lsn: bool  # records carry _sdc_lsn
    value_limit: StreamValueLimit | None = None  # max_value_bytes, as the stream applies it
    plugin: str = "pgoutput"  # which plugin's values `record` takes: pgoutput's texts, or wal2json's parsed JSON


def _json_reader(read: Callable | None) -> Callable[[bytes], bytes]:
    """Return the reader of a value's bytes as pgoutput sent them into its JSON, from the reader of its text."""
    if read is orjson.Fragment:
        return _as_is  # an integer's text is its JSON
    if read is None:
        return _json_string
    return _JSON_READERS.get(read) or (lambda value: orjson.dumps(read(value.decode())))


def _numeric_json(value: bytes) -> bytes:
    """_numeric on bytes: a finite numeric's text is its JSON."""
    return value if value[-1] in _DIGIT_BYTES else b"null"


def _float_json(value: bytes) -> bytes:
    """_float on bytes."""
    if value[-1] not in _DIGIT_BYTES:
        return b"null"
    return b"0" if value == b"-0" else value


def _timestamptz_json(value: bytes) -> bytes:
    """_timestamptz on bytes, its common case without a str (the text of a timestamp needs no escaping)."""
    if value[4] == 0x2D and value[-1] == 0x30:  # "-", "0"
        return b'"' + value[:10] + b"T" + value[11:] + b':00"'
    return orjson.dumps(_timestamptz(value.decode()))


_DIGIT_BYTES = frozenset(b"0123456789")
# the readers of the most common families on bytes, each as its text's reader above says
_JSON_READERS = {_numeric: _numeric_json, _float: _float_json, _timestamptz: _timestamptz_json}


def _as_is(value: bytes) -> bytes:
    return value


def _json_string(value: bytes) -> bytes:
    return orjson.dumps(value.decode())


def _is_wal2json_number(column: types.ColumnType | None) -> bool:
    return column is not None and not column.domain_base and column.base_name in _WAL2JSON_NUMBER_TEXT


class LocalRows:
    """Renders a stream's whole-row changes from pgoutput's texts into record objects, as the render query would."""

    def __init__(self, columns: list[Column], readers: list, positions: list[int], options: LocalOptions, sent: int):
        """`positions`: each column's in the row as the plugin sends it, of `sent` columns."""
        # wal2json: the positions in its columns array of the numeric values whose text
        # decoders.wal2json_values cuts out of the message, each with what precedes the value there
        self.number_texts = [
            (position, b'{"name":' + orjson.dumps(column.name) + b',"value":')
            for position, column in sorted(zip(positions, columns, strict=True))
            if options.plugin == "wal2json" and _is_wal2json_number(column.type)
        ]
        # the record's keys: the columns, then _sdc_deleted_at, whose value (null) takes the last slot
        self._names = [*(column.name for column in columns), DELETED_AT]
        self._count = len(columns)
        self._in_order = positions == list(range(len(positions)))
        # one C call picks the emitted columns out of the row, in the stream's order, and one slot more
        self._pick = operator.itemgetter(*positions, positions[0])
        self._readers = [(n, read) for n, read in enumerate(readers) if read]
        self._debug_lsn = options.debug_lsn
        limit = options.value_limit
        # columns whose long values max_value_bytes may null (strings, jsonb, text search): a change
        # with one goes to the server; the emitted text of each is at least as long, in characters,
        # as the text it is read from, and a character is at most 4 bytes in any server encoding,
        # so a value of fewer characters than a quarter of the limit never is
        self._limited = [n for n, column in enumerate(columns) if limit is not None and limit.applies_to(column)]
        self._long_text = limit.max_bytes // 4 if limit is not None else 0
        self._tuple_readers, self._template = self._tuple_plan(columns, readers, positions, options, sent)

    def _tuple_plan(self, columns, readers, positions, options, sent) -> tuple[list | None, bytes]:
        """For `tuple_record`: a reader of each column pgoutput sends (None: not emitted), and the record's
        template, its keys written once and a `%b` for each value; no readers where the stream's
        columns are not in the order sent, or for wal2json."""

        def key(name: str) -> bytes:
            return orjson.dumps(name).replace(b"%", b"%%")  # a name may hold what the template would read

        keys = [key(column.name) + b":%b" for column in columns] + [key(DELETED_AT) + b":null"]
        if self._debug_lsn:
            keys.append(key(LSN) + b":%d")
        template = b"{" + b",".join(keys) + b"}"
        if options.plugin != "pgoutput" or positions != sorted(set(positions)):
            return None, template
        plan: list = [None] * sent
        for n, (position, read) in enumerate(zip(positions, readers, strict=True)):
            plan[position] = _json_reader(read)
            if n in self._limited:
                plan[position] = self._unless_long(plan[position])
        return plan, template

    def _unless_long(self, read: Callable[[bytes], bytes]) -> Callable[[bytes], bytes | None]:
        """The reader of a value that max_value_bytes may null: None when it is long enough for the server to
        judge (its bytes, at least as many as its characters, are measured)."""
        long_text = self._long_text
        return lambda value: None if len(value) > long_text else read(value)

    @property
    def reads_tuples(self) -> bool:
        """Tell whether `tuple_record` renders this stream's rows (pgoutput, columns in the order sent)."""
        return self._tuple_readers is not None

    def tuple_record(self, payload: bytes, lsn: str) -> bytes | None:
        """Return the record object, as JSON, of a pgoutput insert or update that carries only its whole new row,
        as `record` would; None when the general path must take it (a value left out, or long).

        The fast path of the WAL pass: each value's bytes go into the record's template without
        a list of texts, a dict or a str for the integers.
        """
        values = whole_row_json(payload, self._tuple_readers)
        if values is None or (self._limited and None in values):
            return None
        if self._debug_lsn:
            return self._template % (*values, lsn_to_int(lsn))
        return self._template % tuple(values)

    @classmethod
    def of(cls, columns: list[Column], wal_names: tuple[str, ...], options: LocalOptions) -> LocalRows | None:
        """Return the renderer of a stream whose every column renders here, read by position; None when one cannot."""
        readers = [
            reader_of(column.type, options.times_pinned, options.plugin) if column.type else _UNKNOWN
            for column in columns
        ]
        if not columns or _UNKNOWN in readers or not {column.name for column in columns} <= set(wal_names):
            return None
        positions = [wal_names.index(column.name) for column in columns]
        return cls(columns, readers, positions, options, len(wal_names))

    def record(self, values: list[str | None], lsn: str) -> bytes | None:
        """Return the record object of a whole row as JSON, or None when a value is long enough for the server to judge."""
        # a copy: the same change may go to another stream (a partition's, its parent's)
        if self._in_order:
            row = values[: self._count]
            row.append(None)
        else:
            row = list(self._pick(values))
            row[-1] = None
        for n in self._limited:
            if row[n] is not None and len(row[n]) > self._long_text:
                return None
        for n, read in self._readers:
            value = row[n]
            if value is not None:
                row[n] = read(value)
        record = dict(zip(self._names, row, strict=True))
        if self._debug_lsn:
            record[LSN] = lsn_to_int(lsn)
        # a copy of its own length: orjson's bytes hold a 4 KB buffer, and a record waits in its batch
        return bytes(memoryview(orjson.dumps(record)))
