"""Stream maps the server applies itself: aliases, removed properties, renames and md5() of a string column.

A stream whose one map holds nothing else keeps the byte path (and BATCH files): its copy's render
query selects, renames and hashes the rendered columns, and singer-sdk's mapper only makes its
SCHEMA. `FastMap.of` accepts a map only where the query's output is what the SDK's mapper makes of
the unmapped record, key order included (tests/test_fast_maps.py checks it against the mapper):

- `"col": null` (or `"__NULL__"`) and `"__else__": null`, which keeps the key properties;
- `"new": "col"` (or `_['col']`, `record['col']`), a copy that `"col": null` makes a rename;
- `"col": "md5(col)"` of a string column that is never null (the SDK's md5() fails on null), and
  `"md5(col) if col else None"` of any string column (null and '' stay null);
- `__alias__` and `__key_properties__`, which change only the stream's name and SCHEMA.

Anything else (`__filter__`, `__source__`, other expressions, flattening, max_value_bytes, whose
markers the sink replaces after the query) goes through the SDK's mapper in Python.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
from typing import Any

from psycopg2 import sql

from tap_postgres.output import MessageWriter

# what singer-sdk's expressions see under these names is not a column of the record
NOT_COLUMNS = frozenset({"_", "record", "config", "fake", "__stream_name__", "__original_stream_name__"})
OPTIONS = ("__alias__", "__key_properties__", "__else__")
REMOVED = (None, "__NULL__")
# NAMEDATALEN - 1: the server would cut a longer output name short
MAX_NAME_BYTES = 63

# md5 of the value as the SDK hashes it: the JSON string's text, as UTF-8 whatever the server encoding.
# A text or varchar column renders as that text; any other (a date, a uuid) is its JSON string's text.
_AS_JSON_TEXT = "(to_json({v}) #>> '{{}}')"
HASHES = {
    "md5": "md5(convert_to({t}, 'UTF8'))",
    "md5 if set": "CASE WHEN {t} <> '' THEN md5(convert_to({t}, 'UTF8')) END",
}
TEXT_TYPES = ("text", "varchar")


@dataclasses.dataclass(frozen=True)
class Output:
    """One property of the mapped record: a rendered column, as it is or hashed."""

    name: str
    source: str
    hashed: str | None = None  # a key of HASHES


@dataclasses.dataclass(frozen=True)
class FastMap:
    """A stream's map as the server applies it: the stream's new name and its record's properties."""

    alias: str
    names: tuple[str, ...]  # the rendered record's properties, which the outputs read
    outputs: tuple[Output, ...]
    texts: frozenset[str]  # the properties the render query gives as text

    @classmethod
    def of(cls, stream_maps: dict, stream_id: str, stream_map: Any, schema: dict, columns: list) -> FastMap | None:
        """Return the server's form of `stream_map` (singer-sdk's, of the stream's `schema` and records of
        `columns`), or None."""
        from singer_sdk.mapper import CustomStreamMap

        names = [column.name for column in columns]

        definition = _definition(stream_maps, stream_id)
        if type(stream_map) is not CustomStreamMap or not isinstance(definition, dict) or "__filter__" in definition:
            return None
        strings = _string_columns(schema)
        if definition.get("__else__", "kept") in REMOVED:
            kept = [key for key in stream_map.transformed_key_properties or [] if key in names]
        else:
            kept = list(names)
        outputs = {name: Output(name, name) for name in kept}
        for key, expression in definition.items():
            if key in OPTIONS:
                continue
            if expression in REMOVED:
                outputs.pop(key, None)
                continue
            value = _output_of(key, expression, names, strings)
            if value is None:
                return None
            outputs[key] = value  # a property the record has keeps its place, as in a dict
        if not outputs or any(len(name.encode()) > MAX_NAME_BYTES or "\x00" in name for name in outputs):
            return None  # an empty record the SDK drops; a name the server cannot keep
        texts = frozenset(
            column.name
            for column in columns
            if column.type is not None and column.type.base_name in TEXT_TYPES and not column.type.is_array
        )
        return cls(stream_map.stream_alias, tuple(names), tuple(outputs.values()), texts)

    def over(self, rendered: sql.Composable, names: list[str]) -> sql.Composed:
        """Return the query of the mapped records, read from the `rendered` query of the unmapped ones."""
        if names is None or tuple(names) != self.names:
            raise RuntimeError(f"fast map of {self.alias} was made for {self.names}, not {names}")
        selected = []
        for output in self.outputs:
            value = sql.Identifier("unmapped", output.source)
            if output.hashed:
                text = value if output.source in self.texts else sql.SQL(_AS_JSON_TEXT).format(v=value)
                value = sql.SQL(HASHES[output.hashed]).format(t=text)
            selected.append(sql.SQL("{} AS {}").format(value, sql.Identifier(output.name)))
        return sql.SQL("SELECT {} FROM ({}) AS unmapped").format(sql.SQL(", ").join(selected), rendered)


def _definition(stream_maps: dict, stream_id: str) -> Any:
    """Return the map of `stream_maps` that singer-sdk applies to the stream as its own (the last that matches)."""
    found = None
    for key, definition in stream_maps.items():
        if isinstance(definition, dict) and "__source__" in definition:
            continue  # a further projection, never the stream's own map
        if key == stream_id or fnmatch.fnmatch(stream_id, key):
            found = definition
    return found


def _string_columns(schema: dict) -> dict[str, bool]:
    """Return the properties whose values are JSON strings, each with whether it can be null."""
    strings = {}
    for name, prop in (schema.get("properties") or {}).items():
        kinds = prop.get("type") if isinstance(prop, dict) else None
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        if "string" in kinds and set(kinds) <= {"string", "null"}:
            strings[name] = "null" in kinds
    return strings


def _output_of(key: str, expression: Any, names: list[str], strings: dict[str, bool]) -> Output | None:
    """Return the property `key` that `expression` computes, when it is a column, or its md5(); else None."""
    if not isinstance(expression, str):
        return None
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return None
    column = _column_of(node, key, names)
    if column is not None:
        return Output(key, column)
    hashed = _md5_of(node, key, names)
    if hashed is not None and strings.get(hashed) is False:
        return Output(key, hashed, "md5")
    if isinstance(node, ast.IfExp) and isinstance(node.orelse, ast.Constant) and node.orelse.value is None:
        tested, hashed = _column_of(node.test, key, names), _md5_of(node.body, key, names)
        if hashed is not None and tested == hashed and hashed in strings:
            return Output(key, hashed, "md5 if set")
    return None


def _md5_of(node: ast.AST, key: str, names: list[str]) -> str | None:
    """Return the column that `node` hashes when it is `md5(column)`, else None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "md5"):
        return None
    if "md5" in names or len(node.args) != 1 or node.keywords:
        return None  # a property named md5 hides the function from the expression
    return _column_of(node.args[0], key, names)


def _column_of(node: ast.AST, key: str, names: list[str]) -> str | None:
    """Return the column of the record that `node` reads as it is (`col`, `_['col']`, `self`), else None."""
    if isinstance(node, ast.Name):
        if node.id == "self":  # the property's own value, else the record's property named self
            return key if key in names else ("self" if "self" in names else None)
        return node.id if node.id in names and node.id not in NOT_COLUMNS else None
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("_", "record")
        and isinstance(node.slice, ast.Constant)
        and node.slice.value in names
    ):
        return node.slice.value
    return None


class FastMapWriter:
    """The writer of a fast-mapped stream's copy: under the map's alias, its render query mapped by the server."""

    def __init__(self, writer: MessageWriter, fast_map: FastMap):
        self.writer = writer
        self.server_map = fast_map

    def __getattr__(self, name: str) -> Any:
        # write_lines, write_state, write_message, versions_before_records, flush_batch, discard
        return getattr(self.writer, name)

    def envelope(self, stream: str, version: int | None, time_extracted: str) -> tuple:
        """Return the alias's envelope, with the map the copy's query applies (rows.copy_records)."""
        return (*self.writer.envelope(self.server_map.alias, version, time_extracted), self.server_map)

    def write_activate_version(self, stream: str, version: int) -> None:
        """Write ACTIVATE_VERSION under the alias."""
        self.writer.write_activate_version(self.server_map.alias, version)
