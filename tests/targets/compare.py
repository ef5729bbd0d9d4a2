"""The comparison rules in one place: what each target holds for a source value, and a table's differences.

A source value is read as text (arrays element by element) and turned into the value the target should
hold, after the README's rules (NaN and infinities become null, dates are clamped to years 1..9999,
time 24:00:00 is midnight, timetz is in UTC, bytea is hex, hstore and json are objects) and after how
each target stores the JSON it was sent:

- pipelinewise-target-postgres keeps every number in a double precision column (so numbers compare as
  floats), loads top-level strings through CSV made with json.dumps (so control characters stay as
  their JSON escapes, `\\n`), turns an empty string into NULL, keeps arrays as jsonb, and removes a row
  sent with `_sdc_deleted_at` (hard_delete). It ignores ACTIVATE_VERSION: a FULL_TABLE run never
  removes rows deleted at the source.
- meltanolabs-target-postgres (singer-sdk) keeps numbers as numeric, arrays as PostgreSQL arrays,
  marks a row sent with `_sdc_deleted_at` instead of deleting it, and with hard_delete removes rows of
  older versions when ACTIVATE_VERSION arrives.

Date-times compare as UTC instants without a zone (both targets store `timestamp`; date-time strings
inside arrays are parsed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime, time, timezone
from decimal import Decimal

from psycopg2 import sql

HI = datetime(9999, 12, 31, 23, 59, 59, 999999)
LO = datetime(1, 1, 1)
# the session settings the tap uses, so the text of a source value means what the tap read
SOURCE_SESSION = "SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3"

# base type name -> kind of value; every other supported type is a string ("text")
KINDS = {
    "int2": "int",
    "int4": "int",
    "int8": "int",
    "oid": "int",
    "numeric": "numeric",
    "float4": "float",
    "float8": "float",
    "bool": "bool",
    "json": "json",
    "jsonb": "json",
    "hstore": "json",
    "date": "datetime",
    "timestamp": "datetime",
    "timestamptz": "datetime",
    "time": "time",
    "timetz": "timetz",
    "bytea": "bytea",
}


@dataclasses.dataclass(frozen=True)
class SourceColumn:
    name: str
    kind: str
    is_array: bool
    base: str  # the base type's name, domains resolved


def source_columns(conn, schema: str, table: str) -> list[SourceColumn]:
    """Describe the columns of a source table, view or materialized view, domains and arrays resolved."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, a.atttypid, a.atttypmod FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (sql.Identifier(schema, table).as_string(conn),),
        )
        rows = cur.fetchall()
        columns = []
        for name, type_oid, typmod in rows:
            is_array = False
            while True:
                cur.execute(
                    "SELECT typname, typtype, typelem, typbasetype, typtypmod, typcategory FROM pg_type WHERE oid = %s",
                    (type_oid,),
                )
                typname, typtype, typelem, typbasetype, typtypmod, category = cur.fetchone()
                if category == "A" and typelem:
                    is_array, type_oid = True, typelem
                elif typtype == "d":
                    type_oid, typmod = typbasetype, typtypmod
                else:
                    break
            kind = KINDS.get(typname, "text")
            if typname == "bit" and typmod == 1:
                kind = "bool"
            columns.append(SourceColumn(name, kind, is_array, typname))
        return columns


def _source_text_sql(column: SourceColumn, value: sql.Composable) -> sql.Composable:
    if column.base == "hstore":
        return sql.SQL("hstore_to_json({})::text").format(value)
    if column.base == "bytea":
        return sql.SQL("encode({}, 'hex')").format(value)
    if column.base == "bpchar":
        # a cast to text would strip char(n)'s padding, which the tap keeps; format() prints it as stored
        return sql.SQL("CASE WHEN {0} IS NOT NULL THEN format('%s', {0}) END").format(value)
    if column.base == "bit" and column.kind == "bool":
        return sql.SQL("({} = B'1')::text").format(value)
    return sql.SQL("({})::text").format(value)


def source_select(conn, schema: str, table: str, columns: list[SourceColumn]) -> sql.Composed:
    """SELECT of every column as text; arrays as text[] of their elements, flattened to one dimension."""
    parts = []
    for column in columns:
        ident = sql.Identifier(column.name)
        if column.is_array:
            element = _source_text_sql(column, sql.SQL("e.v"))
            parts.append(
                sql.SQL(
                    "CASE WHEN {c} IS NOT NULL THEN ARRAY(SELECT {e} FROM unnest({c}) WITH ORDINALITY AS e(v, n) "
                    "ORDER BY e.n) END"
                ).format(c=ident, e=element)
            )
        else:
            parts.append(_source_text_sql(column, ident))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), sql.Identifier(schema, table))


def _parse_datetime(text: str) -> datetime:
    if text == "infinity":
        return HI
    if text == "-infinity" or text.endswith(" BC"):
        return LO
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        # a year of five digits: after 9999-12-31
        if re.match(r"^\d{5,}-", text):
            return HI
        raise
    return _naive_utc(value)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _parse_time(text: str, with_zone: bool) -> time:
    if text.startswith("24:00:00"):
        return time(0)
    value = time.fromisoformat(text)
    if with_zone and value.tzinfo is not None:
        moment = datetime.combine(datetime(2000, 1, 1), value).astimezone(timezone.utc)
        return moment.time()
    return value


def _number(value, target: str):
    """Numbers as the target keeps them: floats in pipelinewise's double precision columns, else exact."""
    if value is None:
        return None
    return float(value) if target == "pipelinewise" else Decimal(str(value))


def _pipelinewise_csv_text(text: str) -> str | None:
    """A top-level string after pipelinewise's CSV: json.dumps text, CSV ESCAPE '\\' undoes only \\" and \\\\."""
    if text == "":
        return None
    dumped = json.dumps(text, ensure_ascii=False)[1:-1]
    return re.sub(r'\\([\\"])', r"\1", dumped)


def expected_value(column: SourceColumn, text, target: str, top_level: bool = True):
    """The value `target` should hold for a source value read by `source_select`."""
    if column.is_array and top_level:
        if text is None:
            return None
        return [expected_value(column, element, target, top_level=False) for element in text]
    if text is None:
        return None
    kind = column.kind
    if kind == "int":
        return int(text)
    if kind == "numeric":
        number = Decimal(text)
        return None if not number.is_finite() else _number(number, target)
    if kind == "float":
        number = float(text)
        return None if math.isnan(number) or math.isinf(number) else number
    if kind == "bool":
        return text == "true"
    if kind == "json":
        return json.loads(text)
    if kind == "datetime":
        return _parse_datetime(text)
    if kind in ("time", "timetz"):
        return _parse_time(text, with_zone=kind == "timetz")
    if target == "pipelinewise" and top_level:
        return _pipelinewise_csv_text(text)
    return text


def stored_value(column: SourceColumn, value, target: str, top_level: bool = True):
    """A target's value (as psycopg2 reads it) in the form `expected_value` gives."""
    if column.is_array and top_level:
        if value is None:
            return None
        return [stored_value(column, element, target, top_level=False) for element in value]
    if value is None:
        return None
    kind = column.kind
    if kind == "numeric":
        return _number(value, target)
    if kind == "float":
        return float(value)
    if kind == "datetime" and isinstance(value, str):
        return _naive_utc(datetime.fromisoformat(value))
    if kind in ("time", "timetz") and isinstance(value, str):
        return time.fromisoformat(value)
    return value


def _key(row: dict, key_columns: list[str]):
    return tuple(json.dumps(row[name], default=str, sort_keys=True) for name in key_columns)


@dataclasses.dataclass
class TableDiff:
    """Differences of a target table from its source table; empty when they hold the same rows."""

    missing: list = dataclasses.field(default_factory=list)  # keys in the source, not in the target
    unexpected: list = dataclasses.field(default_factory=list)  # keys in the target, not in the source
    different: list = dataclasses.field(default_factory=list)  # (key, column, expected, stored)
    columns: str = ""  # a column set mismatch
    source_rows: int = 0
    target_rows: int = 0

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.different or self.columns)

    def report(self, limit: int = 25) -> str:
        lines = [f"source rows {self.source_rows}, target rows {self.target_rows}"]
        if self.columns:
            lines.append(self.columns)
        if self.missing:
            lines.append(f"{len(self.missing)} rows missing from the target, e.g. {self.missing[:limit]}")
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} rows only in the target, e.g. {self.unexpected[:limit]}")
        for key, column, expected, stored in self.different[:limit]:
            lines.append(f"row {key} column {column}: source gives {expected!r}, target holds {stored!r}")
        if len(self.different) > limit:
            lines.append(f"... {len(self.different) - limit} more differing values")
        return "\n".join(lines)


def read_target_rows(target_conn, schema: str, table: str) -> tuple[list[str], list[tuple]]:
    """Rows of a target table that are not marked deleted (meltanolabs soft-deletes LOG_BASED deletes)."""
    with target_conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        )
        names = {name for (name,) in cur.fetchall()}
        if not names:
            raise AssertionError(f"target table {schema}.{table} does not exist")
        where = sql.SQL(" WHERE _sdc_deleted_at IS NULL") if "_sdc_deleted_at" in names else sql.SQL("")
        cur.execute(sql.SQL("SELECT * FROM {}{}").format(sql.Identifier(schema, table), where))
        return [d.name for d in cur.description], cur.fetchall()


def compare_table(
    source_conn,
    source_schema: str,
    table: str,
    target_conn,
    target_schema: str,
    target: str,
    key_columns: list[str],
    deleted_keys=None,
    target_table: str | None = None,
    only_columns: set[str] | None = None,
) -> TableDiff:
    """Compare a target table with its source table, value by value after the rules above.

    `deleted_keys`, when given, are key tuples the source deleted that the target may still hold (a sync that
    does not propagate deletes); None means no row may be left over. Without `key_columns` the rows are
    compared as a multiset. `only_columns`, when given, compares just those source columns (each must be in
    the target) and lets the target keep others: columns a schema change dropped or renamed at the source.
    """
    columns = source_columns(source_conn, source_schema, table)
    if only_columns is not None:
        columns = [c for c in columns if c.name in only_columns]
    with source_conn.cursor() as cur:
        cur.execute(SOURCE_SESSION)
        cur.execute(source_select(source_conn, source_schema, table, columns))
        source_rows = [
            {c.name: expected_value(c, text, target) for c, text in zip(columns, row, strict=True)}
            for row in cur.fetchall()
        ]
    names, rows = read_target_rows(target_conn, target_schema, target_table or table)
    by_name = {c.name: c for c in columns}
    diff = TableDiff(source_rows=len(source_rows), target_rows=len(rows))
    stored_names = {name for name in names if not name.startswith("_sdc_")}
    if only_columns is not None and set(by_name) <= stored_names:
        stored_names = set(by_name)
    if stored_names != set(by_name):
        diff.columns = f"columns differ: only in source {set(by_name) - stored_names}, only in target {stored_names - set(by_name)}"
    shared = [c for c in columns if c.name in stored_names]
    target_rows = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        target_rows.append({c.name: stored_value(c, values[c.name], target) for c in shared})

    if not key_columns:
        # no key: compare sorted lists of whole rows
        def canon(row):
            return json.dumps({c.name: row[c.name] for c in shared}, default=str, sort_keys=True)

        expected = sorted(canon(r) for r in source_rows)
        stored = sorted(canon(r) for r in target_rows)
        if expected != stored:
            diff.missing = sorted(set(expected) - set(stored))
            diff.unexpected = sorted(set(stored) - set(expected))
        return diff

    allowed = {_key(dict(zip(key_columns, k, strict=True)), key_columns) for k in deleted_keys or ()}
    return _compare_by_key(diff, source_rows, target_rows, shared, key_columns, allowed)


def _compare_by_key(diff: TableDiff, expected_rows, stored_rows, columns, key_columns, leftovers=frozenset()):
    """Fill `diff` with the rows missing, unexpected (but those keyed in `leftovers`) and different, by key."""
    expected = {_key(r, key_columns): r for r in expected_rows}
    stored = {}
    for row in stored_rows:
        key = _key(row, key_columns)
        if key in stored:
            diff.unexpected.append(("duplicate", key))
        stored[key] = row
    diff.missing = sorted(set(expected) - set(stored))
    diff.unexpected += sorted(k for k in set(stored) - set(expected) if k not in leftovers)
    for key in sorted(set(expected) & set(stored)):
        for column in columns:
            if expected[key][column.name] != stored[key][column.name]:
                diff.different.append((key, column.name, expected[key][column.name], stored[key][column.name]))
    return diff


# ------------------------------------------------------------------------ what the tap emitted


def property_column(name: str, schema_property: dict) -> SourceColumn:
    """Describe a SCHEMA message's property as `expected_value` reads a source column: its kind, whether an array."""
    is_array = "array" in schema_property.get("type", [])
    element = schema_property.get("items", {}) if is_array else schema_property
    types = element.get("type", [])
    if element.get("format") == "date-time":
        kind = "datetime"
    elif "integer" in types:
        kind = "int"
    elif "number" in types:
        kind = "numeric"
    elif "boolean" in types:
        kind = "bool"
    else:
        kind = "text"
    return SourceColumn(name, kind, is_array, kind)


def _emitted_text(value):
    """An emitted JSON value (numbers parsed as Decimal) as the source text `expected_value` takes."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_emitted_text(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pipelinewise_buffered(records: list[dict], key_columns: list[str]) -> list[dict]:
    """The records pipelinewise-target-postgres loads: its batch keeps one per key values joined with commas
    (the last), so two keys that differ only in where a comma falls load as one row."""
    buffered: dict[str, dict] = {}
    for record in records:
        buffered[",".join(str(record[name]) for name in key_columns)] = record
    return list(buffered.values())


def pipelinewise_collisions(records: list[dict], schema: dict, key_columns: list[str]) -> list[tuple]:
    """The keys under which pipelinewise-target-postgres would store two of these records: its CSV keeps a
    control character as its JSON escape, so a name with a line break and one with a backslash and `n`
    are one key, and the load stops on the primary key."""
    columns = [property_column(name, schema["properties"][name]) for name in key_columns]
    seen, collisions = set(), []
    for record in _pipelinewise_buffered(records, key_columns):
        key = tuple(expected_value(c, _emitted_text(record.get(c.name)), "pipelinewise") for c in columns)
        if key in seen:
            collisions.append(key)
        seen.add(key)
    return collisions


def compare_records(
    records: list[dict], schema: dict, key_columns: list[str], target_conn, target_schema: str, table: str, target: str
) -> TableDiff:
    """Compare a target table with the records the tap emitted for it under `schema` (a SCHEMA message's)."""
    columns = [property_column(name, prop) for name, prop in schema["properties"].items()]
    if target == "pipelinewise":
        records = _pipelinewise_buffered(records, key_columns)
    expected_rows = [
        {c.name: expected_value(c, _emitted_text(record.get(c.name)), target) for c in columns} for record in records
    ]
    names, rows = read_target_rows(target_conn, target_schema, table)
    diff = TableDiff(source_rows=len(expected_rows), target_rows=len(rows))
    stored_names = {name for name in names if not name.startswith("_sdc_")}
    if stored_names != {c.name for c in columns}:
        diff.columns = f"columns differ: target holds {sorted(stored_names)}"
        return diff
    stored_rows = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        stored_rows.append({c.name: stored_value(c, values[c.name], target) for c in columns})
    return _compare_by_key(diff, expected_rows, stored_rows, columns, key_columns)


def streams_of(lines: list[str]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """The SCHEMA message and the records of each stream of tap output `lines` (numbers as Decimal)."""
    schemas, records = {}, {}
    for line in lines:
        message = json.loads(line, parse_float=Decimal)
        if message["type"] == "SCHEMA":
            schemas[message["stream"]] = message
        elif message["type"] == "RECORD":
            records.setdefault(message["stream"], []).append(message["record"])
    return schemas, records


def loaded_diffs(lines: list[str], target_conn, target: str, target_schema: str) -> dict[str, TableDiff]:
    """Compare each stream's table in `target_schema` with the records of the tap output `lines` it loaded;
    return the streams whose table differs (a stream's table is named after its part after the dash)."""
    schemas, records = streams_of(lines)
    diffs = {}
    for stream, emitted in records.items():
        schema, table = schemas[stream], stream.split("-", 1)[1]
        diff = compare_records(
            emitted, schema["schema"], schema["key_properties"], target_conn, target_schema, table, target
        )
        if diff:
            diffs[stream] = diff
    return diffs
