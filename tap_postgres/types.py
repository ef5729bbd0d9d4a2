"""PostgreSQL types: one entry per type family, giving its JSON schema and the SQL that renders a value.

Every sync method asks this module and no other module branches on a type name; LOG_BASED also
asks it how to read wal2json's text of a value back into its type (`wal2json_value_sql`). A value's final
JSON text is produced by the server: `render_sql` wraps a column in an expression whose `to_json`
is exactly what the tap emits, so FULL_TABLE copies bytes and never builds a Python value per column.

Every function here composes SQL structurally (psycopg2.sql): a family's template is the tap's own
text with one placeholder, `{v}`, and the values put into it (a column, a type name the server
reported) are Composables, never text formatted into a template, so an enum named `x{text}y` stays
a quoted name.

Rules for values JSON or a target cannot hold (documented in the README):
- numeric and float NaN, Infinity and -Infinity become null;
- dates and timestamps after 9999-12-31 (and `infinity`) become `9999-12-31T23:59:59.999999+00:00`,
  those before 0001-01-01 (BC, and `-infinity`) become `0001-01-01T00:00:00+00:00`; the sync warns
  when a stream contained either (see `CLAMPED_TIMESTAMPS`);
- multi-dimensional arrays of types that need a conversion are flattened to one dimension.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Callable

from psycopg2 import sql

TIMESTAMP_AFTER_RANGE = "9999-12-31T23:59:59.999999+00:00"
TIMESTAMP_BEFORE_RANGE = "0001-01-01T00:00:00+00:00"
# What the sync looks for in its output to warn that a stream held out-of-range dates.
CLAMPED_TIMESTAMPS = (TIMESTAMP_AFTER_RANGE.encode(), TIMESTAMP_BEFORE_RANGE.encode())


@dataclasses.dataclass(frozen=True)
class ColumnType:
    """A column's type as the catalog describes it, with domains and arrays resolved."""

    base_name: str  # pg_type.typname of the base (element) type, e.g. "int4", "numeric", "mood"
    base_kind: str  # pg_type.typtype of the base type: b(ase), e(num), r(ange), m(ultirange), c(omposite), p(seudo)
    base_category: str  # pg_type.typcategory of the base type
    typmod: int = -1  # type modifier of the base type: length, precision and scale
    is_array: bool = False
    # a domain's base type as (schema, typname), which its values are cast to; None when not a domain
    domain_base: tuple[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class TypeFamily:
    """How one family of types becomes JSON: its schema, its render template, whether it can be a bookmark."""

    name: str
    schema: Callable[[ColumnType], dict]
    render: str | Callable[[ColumnType], str]  # SQL template of {v}, the value; "{v}" means to_json is right
    orderable: bool = True  # can be an INCREMENTAL replication key
    # SQL template of {v} whose to_json is an INCREMENTAL bookmark that casts back to exactly the
    # value (None: the emitted value is exact); needed where rendering loses something (NaN, 24:00)
    bookmark: str | None = None
    comparable: bool = True  # has the ordinary < and > a key range needs (hstore's btree has others)
    # the emitted value can be null in a NOT NULL column (NaN becomes null, a json value can be null)
    emits_null: bool = False
    # SQL condition of {v}, an array of the family, under which to_json({v}) prints every element
    # as the render does and no comma but between elements: the array is then rendered that way,
    # without a subquery per value (None: always element by element)
    plain_array: str | None = None

    def template(self, column: ColumnType) -> str:
        """Return the render template for this column."""
        return self.render(column) if callable(self.render) else self.render


def _integer_schema(bits: int) -> Callable[[ColumnType], dict]:
    return lambda column: {"type": ["integer"], "minimum": -(2 ** (bits - 1)), "maximum": 2 ** (bits - 1) - 1}


def _numeric_schema(column: ColumnType) -> dict:
    """numeric(p,s) is bounded by its largest value, 99..9.9..9 (p nines, s after the point).

    Only inclusive `minimum`/`maximum` mean the same under draft 4, draft 7 and 2020-12 (draft 4's
    `exclusiveMaximum` is a boolean, later drafts' a number), and `multipleOf` is left out: float
    validators reject 0.3 as a multiple of 0.1, and Decimal ones fail on 1e-38. The bound is a
    Decimal so it is written exactly, however many digits it has. Targets pick their column type
    from `type` alone (pipelinewise-target-postgres: double precision; singer-sdk: DECIMAL).
    """
    if column.typmod < 4:
        return {"type": ["number"]}  # unconstrained: up to 131072 digits before the point
    packed = column.typmod - 4
    precision, scale = (packed >> 16) & 0xFFFF, packed & 0xFFFF
    if scale & 0x400:  # PostgreSQL 15 allows a negative scale, stored as an 11-bit two's complement
        scale -= 0x800
    if precision - scale > _DOUBLE_DIGITS:
        # a bound beyond a double's range becomes infinity, or null, in the many targets and tools
        # that read JSON numbers as doubles: such a column gets no bounds at all
        return {"type": ["number"]}
    nines = (9,) * precision
    # built, not negated: arithmetic would round the bound to the context's 28 digits
    return {
        "type": ["number"],
        "minimum": decimal.Decimal((1, nines, -scale)),
        "maximum": decimal.Decimal((0, nines, -scale)),
    }


# Digits before the point of the largest double (1.8e308)
_DOUBLE_DIGITS = 308


def _string_schema(column: ColumnType) -> dict:
    return {"type": ["string"]}


def _sized_string_schema(column: ColumnType) -> dict:
    schema = {"type": ["string"]}
    if column.typmod > 4:
        schema["maxLength"] = column.typmod - 4
    return schema


def _bit_schema(column: ColumnType) -> dict:
    return {"type": ["boolean"]} if column.typmod == 1 else {"type": ["string"]}


def _fixed(schema: dict) -> Callable[[ColumnType], dict]:
    return lambda column: dict(schema)


# scale() is null for NaN and both infinities (the literal 'Infinity' would not parse as a numeric
# before PostgreSQL 14, this test works everywhere) and reads the value's header only, where
# `{v} - {v} = 0` computed a numeric per value (bench/NOTES.md, "Rendering cost per type family").
_FINITE = "CASE WHEN scale({v}) IS NOT NULL THEN {v} END"
# to_json prints NaN and the infinities as strings, finite numbers bare and without a comma
_FINITE_ARRAY = "strpos(to_json({v})::text, '\"') = 0"
# Floats also lose the sign of zero (-0 + 0 is 0): LOG_BASED reads a change's values through
# jsonb, whose numbers have no -0, so FULL_TABLE must not emit one either. '0' takes the float's type.
_FINITE_FLOAT = "CASE WHEN {v} - {v} = 0 THEN {v} + '0' END"
# ... and a bookmark keeps NaN and the infinities as the text they cast back from
_FINITE_OR_TEXT = "CASE WHEN {v} - {v} = 0 THEN to_json({v}) ELSE to_json({v}::text) END"
# Exact text for every value, where rendering changes some (24:00:00, a time zone, a bit)
_TEXT_BOOKMARK = "to_json({v}::text)"
# to_json prints every type below with its output function, as a JSON string
_AS_STRING = "{v}"
# PostGIS defines a cast to json (GeoJSON) that to_json would pick; the README promises its text form
_AS_TEXT = "{v}::text"

# Dates and timestamps become timestamptz (the session is in UTC), clamped to the years JSON
# targets accept (with CASE: GREATEST would turn NULL into the lower bound). to_json then prints
# ISO 8601 with a '+00:00' offset by itself, much cheaper than building the text with functions.
# The bounds are untyped, so they take the value's own type: a timestamp compares as a timestamp
# (its '+00' ignored, which in UTC is the same instant) and is cast once, not three times.
_DATE_TIME = (
    "CASE WHEN {v} > '9999-12-31 23:59:59.999999+00' THEN '9999-12-31 23:59:59.999999+00'::timestamptz "
    "WHEN {v} < '0001-01-01 00:00:00+00' THEN '0001-01-01 00:00:00+00'::timestamptz "
    "ELSE ({v})::timestamptz END"
)
# A date compares as a date first: one after 294276 AD has no timestamp to be cast to.
_DATE = (
    "CASE WHEN {v} > '9999-12-31'::date THEN '9999-12-31 23:59:59.999999+00'::timestamptz "
    "WHEN {v} < '0001-01-01'::date THEN '0001-01-01 00:00:00+00'::timestamptz "
    "ELSE ({v})::timestamptz END"
)
# A bookmark in the years JSON holds is the emitted value; outside them, the exact text
_IN_RANGE_BOOKMARK = (
    "CASE WHEN {v} BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00' "
    "THEN to_json(({v})::timestamptz) ELSE to_json({v}::text) END"
)
_DATE_BOOKMARK = (
    "CASE WHEN {v} BETWEEN '0001-01-01'::date AND '9999-12-31'::date "
    "THEN to_json(({v})::timestamptz) ELSE to_json({v}::text) END"
)
# json keeps its text, which may hold \u0000 (jsonb cannot), with its line breaks (whitespace
# outside strings: inside them JSON has them escaped) made spaces so a RECORD stays one line.
# A value without one is emitted as it is: translating and parsing it again would give the same
# text at twice the cost.
_JSON = (
    "CASE WHEN strpos({v}::text, E'\\n') = 0 AND strpos({v}::text, E'\\r') = 0 THEN {v} "
    "ELSE translate({v}::text, E'\\n\\r', '  ')::json END"
)
# 24:00:00 is the only time whose text holds '24:00:00'; compared as a time, no text is made twice
_TIME = "CASE WHEN {v} = '24:00:00' THEN '00:00:00'::time ELSE {v} END"
_TIMETZ = "replace((({v}) AT TIME ZONE 'UTC')::time::text, '24:00:00', '00:00:00')"

_DATE_TIME_SCHEMA = _fixed({"type": ["string"], "format": "date-time"})
_TIME_SCHEMA = _fixed({"type": ["string"], "format": "time"})

# A json value may be any JSON value: an object, an array, or a scalar (null included)
_JSON_SCHEMA = _fixed({"type": ["null", "object", "array", "string", "number", "boolean"]})

_INTEGER = TypeFamily("integer", _integer_schema(32), "{v}")
_TEXT = TypeFamily("text", _sized_string_schema, _AS_STRING)
_STRING = TypeFamily("string", _string_schema, _AS_STRING)
_UNORDERED_STRING = TypeFamily("unordered string", _string_schema, _AS_STRING, orderable=False)

# Keyed by pg_type.typname of the base type.
FAMILIES_BY_NAME: dict[str, TypeFamily] = {
    "int2": TypeFamily("smallint", _integer_schema(16), "{v}"),
    "int4": _INTEGER,
    "int8": TypeFamily("bigint", _integer_schema(64), "{v}"),
    "oid": TypeFamily("oid", _fixed({"type": ["integer"], "minimum": 0, "maximum": 2**32 - 1}), "{v}::bigint"),
    "numeric": TypeFamily(
        "numeric", _numeric_schema, _FINITE, bookmark=_FINITE_OR_TEXT, emits_null=True, plain_array=_FINITE_ARRAY
    ),
    "float4": TypeFamily(
        "real", _fixed({"type": ["number"]}), _FINITE_FLOAT, bookmark=_FINITE_OR_TEXT, emits_null=True
    ),
    "float8": TypeFamily(
        "double precision", _fixed({"type": ["number"]}), _FINITE_FLOAT, bookmark=_FINITE_OR_TEXT, emits_null=True
    ),
    "money": TypeFamily("money", _string_schema, _AS_STRING),
    "bool": TypeFamily("boolean", _fixed({"type": ["boolean"]}), "{v}"),
    "bit": TypeFamily(
        "bit", _bit_schema, lambda column: "{v} = B'1'" if column.typmod == 1 else _AS_STRING, bookmark=_TEXT_BOOKMARK
    ),
    "varbit": _STRING,
    # char(n) keeps its padding, as pipelinewise emits it (a cast to text would strip it)
    "bpchar": _TEXT,
    "varchar": _TEXT,
    "text": _STRING,
    "citext": _STRING,
    "name": _STRING,
    "uuid": _STRING,
    "json": TypeFamily("json", _JSON_SCHEMA, _JSON, orderable=False, emits_null=True),
    "jsonb": TypeFamily("jsonb", _JSON_SCHEMA, "{v}", orderable=False, emits_null=True),
    "hstore": TypeFamily(
        "hstore", _fixed({"type": ["object"], "properties": {}}), "{v}::json", orderable=False, comparable=False
    ),
    "date": TypeFamily("date", _DATE_TIME_SCHEMA, _DATE, bookmark=_DATE_BOOKMARK),
    "timestamp": TypeFamily("timestamp", _DATE_TIME_SCHEMA, _DATE_TIME, bookmark=_IN_RANGE_BOOKMARK),
    "timestamptz": TypeFamily("timestamptz", _DATE_TIME_SCHEMA, _DATE_TIME, bookmark=_IN_RANGE_BOOKMARK),
    "time": TypeFamily("time", _TIME_SCHEMA, _TIME, bookmark=_TEXT_BOOKMARK),
    "timetz": TypeFamily("timetz", _TIME_SCHEMA, _TIMETZ, bookmark=_TEXT_BOOKMARK),
    # IntervalStyle iso_8601 is pinned by the connection, so the text is an ISO 8601 duration.
    "interval": TypeFamily("interval", _string_schema, _AS_STRING),
    "inet": _STRING,
    "cidr": _STRING,
    "macaddr": _STRING,
    "macaddr8": _STRING,
    "bytea": TypeFamily("bytea", _string_schema, "encode({v}, 'hex')", orderable=False),
    "xml": _UNORDERED_STRING,
    "tsvector": _UNORDERED_STRING,
    "tsquery": _UNORDERED_STRING,
    "pg_lsn": _STRING,
    "point": _UNORDERED_STRING,
    "line": _UNORDERED_STRING,
    "lseg": _UNORDERED_STRING,
    "box": _UNORDERED_STRING,
    "path": _UNORDERED_STRING,
    "polygon": _UNORDERED_STRING,
    "circle": _UNORDERED_STRING,
    # PostGIS prints hex EWKB
    "geometry": TypeFamily("postgis", _string_schema, _AS_TEXT, orderable=False),
    "geography": TypeFamily("postgis", _string_schema, _AS_TEXT, orderable=False),
}

# Enums and ranges print as text whatever their name.
FAMILIES_BY_KIND: dict[str, TypeFamily] = {
    "e": TypeFamily("enum", _string_schema, _AS_STRING),
    "r": _STRING,
    "m": _UNORDERED_STRING,
}


def family_of(column: ColumnType) -> TypeFamily | None:
    """Return the family of a column's base type, or None when the tap does not support it."""
    return FAMILIES_BY_KIND.get(column.base_kind) or FAMILIES_BY_NAME.get(column.base_name)


def json_schema(column: ColumnType, *, nullable: bool) -> dict | None:
    """Return the JSON schema of a column, or None when its type is unsupported."""
    family = family_of(column)
    if family is None:
        return None
    schema = family.schema(column)
    if column.is_array:
        # an element of any array can be NULL: PostgreSQL has no NOT NULL for elements
        schema = {"type": ["array"], "items": with_null(schema)}
    elif family.emits_null:
        nullable = True
    return with_null(schema) if nullable else schema


def with_null(schema: dict) -> dict:
    """Return the schema with "null" first among its types (as it is when it has none, e.g. unsupported)."""
    kinds = schema.get("type")
    if kinds is None or "null" in kinds:
        return schema
    return {**schema, "type": ["null", *([kinds] if isinstance(kinds, str) else kinds)]}


def is_orderable(column: ColumnType) -> bool:
    """Tell whether a column can order an INCREMENTAL bookmark."""
    family = family_of(column)
    return family is not None and family.orderable and not column.is_array


def is_comparable(column: ColumnType) -> bool:
    """Tell whether a key column has the ordinary < and > that FULL_TABLE's key ranges use."""
    family = family_of(column)
    return family is not None and family.comparable


def bookmark_sql(column: ColumnType, value: sql.Composable) -> sql.Composable:
    """Return SQL of the json bookmark of a replication key: the emitted value where that is exact."""
    family = family_of(column)
    if family is None or family.bookmark is None:
        return sql.SQL("to_json({})").format(render_sql(column, value))
    return sql.SQL(family.bookmark).format(v=_as_base(column, value))


def render_sql(column: ColumnType, value: sql.Composable) -> sql.Composable:
    """Return SQL that renders `value` (a column or an expression of its type) as the value to emit."""
    family = family_of(column)
    if family is None:
        raise ValueError(f"unsupported type {column.base_name}")
    template = family.template(column)
    if not column.is_array:
        return sql.SQL(template).format(v=_as_base(column, value))
    if template == "{v}" and not column.domain_base:
        # to_json already renders these element types right; only extra dimensions need flattening
        return sql.SQL(
            "CASE WHEN array_ndims({v}) > 1 THEN to_json(ARRAY(SELECT unnest({v}))) ELSE to_json({v}) END"
        ).format(v=value)
    element = sql.SQL(template).format(v=_as_base(column, sql.Identifier("e", "v")))
    by_element = sql.SQL(
        "CASE WHEN {v} IS NOT NULL THEN (SELECT coalesce(json_agg({element} ORDER BY e.n), '[]') "
        "FROM unnest({v}) WITH ORDINALITY AS e(v, n)) END"
    ).format(v=value, element=element)
    if family.plain_array is None or column.domain_base:
        return by_element
    # json_agg separates elements with ', ', to_json with ','; a subquery per value costs 1.7 s
    # of server CPU per million, this about 1 s (bench/NOTES.md, "Rendering cost per type family")
    return sql.SQL(
        "CASE WHEN array_ndims({v}) = 1 AND {plain} THEN replace(to_json({v})::text, ',', ', ')::json ELSE {by_element} END"
    ).format(v=value, plain=sql.SQL(family.plain_array).format(v=value), by_element=by_element)


# Types whose values are short whatever they hold: max_value_bytes never looks at them.
_SHORT_VALUES = frozenset(
    "int2 int4 int8 oid float4 float8 numeric money bool date timestamp timestamptz time timetz interval "
    "uuid inet cidr macaddr macaddr8 pg_lsn point line lseg box circle".split()
)
# Types whose length in bytes the server reads from the value's header, without rendering it, and
# how many bytes of emitted text each byte becomes (bytea prints as hex).
_LENGTH_IN_HEADER = {"text": 1, "varchar": 1, "bpchar": 1, "citext": 1, "name": 1, "bytea": 2}


def may_be_long(column: ColumnType) -> bool:
    """Tell whether a column's values can be long enough for max_value_bytes to null them."""
    return column.is_array or (column.base_kind != "e" and column.base_name not in _SHORT_VALUES)


def text_length_sql(column: ColumnType, value: sql.Composable, rendered: sql.Composable | None) -> sql.Composable:
    """Return SQL of the length in bytes of a value's emitted text, as max_value_bytes measures it.

    Text and bytea give it from the value's header, with no copy; any other type is measured on
    its `rendered` text, which renders the value once more, or with `rendered` None by its stored
    size (pg_column_size: compressed, so a lower bound).
    """
    per_byte = _LENGTH_IN_HEADER.get(column.base_name)
    if per_byte is None or column.is_array:
        if rendered is None:
            return sql.SQL("pg_column_size({})").format(value)
        return sql.SQL("octet_length(({})::text)").format(rendered)
    length = sql.SQL("octet_length(({})::text)" if column.base_name == "citext" else "octet_length({})").format(
        _as_base(column, value)
    )
    return length if per_byte == 1 else sql.SQL("{} * {}").format(length, sql.Literal(per_byte))


def base_type_sql(column: ColumnType) -> sql.Composable | None:
    """Return the type a domain's values are compared and read back as, or None when not a domain.

    The operators of an enum (anyenum) do not resolve for a domain over it, so keys and bookmarks
    compare as the base type; and a change's values are read into the base type because a delete
    has nulls where a NOT NULL domain allows none. The base type carries no length or precision,
    which a value already stored never needs.
    """
    if not column.domain_base:
        return None
    base = sql.Identifier(*column.domain_base)
    return sql.SQL("{}[]").format(base) if column.is_array else base


def _as_base(column: ColumnType, value: sql.Composable) -> sql.Composable:
    """Cast a domain value to its base type so the family's SQL applies to it."""
    if not column.domain_base:
        return value
    return sql.SQL("({})::{}").format(value, sql.Identifier(*column.domain_base))


def wal2json_value_sql(column: ColumnType | None, text: sql.Composable, cast: sql.Composable) -> sql.Composable:
    """Return SQL that reads wal2json's text of a value (`text`) back into the column's type (`cast`).

    A type the tap does not know (None) is only read as the input of a generated column's expression.
    """
    if column is None:
        return sql.SQL("({})::{}").format(text, cast)
    if column.base_name == "bytea" and not column.is_array and not column.domain_base:
        # wal2json prints a bytea column as bare hex, without the \\x prefix the input function needs
        return sql.SQL("decode({}, 'hex')").format(text)
    return sql.SQL("({})::{}").format(text, base_type_sql(column) or cast)
