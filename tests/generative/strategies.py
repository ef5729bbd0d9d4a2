"""Hypothesis strategies: identifiers, column types, their values (SQL expressions), tables and DML plans."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from decimal import Decimal

from hypothesis import strategies as st

from generative.script import ident, string

# ---------------------------------------------------------------------------------------------- names

# Every alias and per-change column the tap's own SQL uses, and words its SQL and wal2json's JSON hold:
# a column of that name must not be mistaken for them. (xmin, ctid, tableoid, cmin, cmax, xmax are
# system columns: PostgreSQL refuses them as column names.)
TAP_ALIASES = [
    "r", "s", "source", "change", "stored", "typed", "e", "v", "n", "entry", "k", "a", "c", "i", "t", "x", "u",
    "relid", "attnum", "position", "_tap_postgres_order", "_tap_postgres_entry", "value", "name", "columns",
    "identity", "action", "kind", "lsn", "timestamp", "version", "record", "type", "stream", "nextlsn", "xid",
]  # fmt: skip
RESERVED_WORDS = [
    "select", "from", "where", "order", "user", "table", "group", "limit", "offset", "end", "case", "when",
    "then", "else", "and", "or", "not", "null", "true", "false", "as", "on", "join", "left", "default", "check",
    "primary", "references", "column", "constraint", "create", "desc", "asc", "distinct", "all", "any", "array",
    "both", "cast", "collate", "current_user", "do", "for", "foreign", "grant", "having", "in", "into", "is",
    "lateral", "leading", "only", "returning", "some", "to", "union", "unique", "using", "window", "with",
    "current_date", "fetch", "row", "values", "natural", "full", "like", "between", "key",
]  # fmt: skip
ODD_NAMES = [
    "Mixed Case", "UPPER", "CamelCase", "it's", 'say "hi"', "a.b", "a,b", "a*b", "a\\b", " lead", "trail ",
    "tab\tname", "new\nline", "$1", "?", "%", "%s", "100%", "%(x)s", "{v}", "{}", "é", "名前", "🙂", "-", "1abc",
    "'", '"', "--", "/*", "$n", "@.name", "a b c", "Ω≈ç", "\u200b", "NaN",
]  # fmt: skip

# The hardening issue's hostile characters: Python's %-formatting (psycopg2's parameters) and
# str.format / sql.SQL.format placeholders, quotes, statement separators, backslashes and NUL-free
# control characters. PostgreSQL takes every one of them in a quoted identifier (NUL is the only
# character no identifier or text value can hold) of up to 63 bytes, and in every text value.
HOSTILE_CHARS = ["%", "{", "}", "'", '"', ";", "\\", "\t", "\n", "\r", "\x01", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"]
HOSTILE_CHARS += ["\x85"]  # NEL: a C1 control, and a line break to str.splitlines
HOSTILE_FRAGMENTS = [
    *HOSTILE_CHARS, "%s", "%(x)s", "%%", "%d", "%(v)s", "{}", "{text}", "{v}", "{0}", "{{", "}}", "''", '""', "\\'",
    "$1", "?", ":x", "--", "/*", ".", ",", "*", " ",
]  # fmt: skip
HOSTILE_NAMES = [
    "%", "%s", "%(x)s", "%%", "{", "}", "{text}", "{v}", "{0}", "'", '"', ";", "\\", "\t", "\n", "\x01", "\x1f",
    "\x7f", "x{text}y", "e{v}", "a%sb", "%(name)s", "{0}{1}", "%s%s", "100%%", "it's", "a'b\"c", 'x"";--', "a;b",
    "a\\b", "\\'", "'; DROP TABLE t; --", "{v}%s", "%{v}", "\x01\x1f\x7f", "tab\t{v}", "new\n%s", "{'v'}",
]  # fmt: skip


def hostile_texts() -> st.SearchStrategy[str]:
    """Hostile names and values: the issue's list as is, or a few of its fragments between letters."""
    pieces = st.sampled_from([*HOSTILE_FRAGMENTS, "a", "x", "é"])
    return st.one_of(st.sampled_from(HOSTILE_NAMES), st.lists(pieces, min_size=1, max_size=4).map("".join))


_NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
# one character of each UTF-8 length, so 63-byte names end on every kind of boundary
_WIDE_CHARS = ["a", "Z", " ", '"', "'", ".", "é", "ß", "名", "€", "🙂", "𝔘", "%", "{", "}", ";", "\\", "\t"]


def _fits(name: str, limit: int = 63) -> bool:
    return 0 < len(name.encode()) <= limit


@st.composite
def name_of_bytes(draw, size: int = 63) -> str:
    """A name of exactly `size` bytes (63: PostgreSQL's limit), multibyte characters included."""
    name = ""
    for char in draw(st.lists(st.sampled_from(_WIDE_CHARS), max_size=40)):
        if len((name + char).encode()) > size:
            break
        name += char
    return name + "x" * (size - len(name.encode()))


def identifiers(max_bytes: int = 63) -> st.SearchStrategy[str]:
    """Column, table and type names: the tap's own aliases often (they shrink to "r"), hostile ones as often."""
    aliases = st.sampled_from(TAP_ALIASES)
    return st.one_of(
        aliases,
        aliases,
        hostile_texts(),
        st.sampled_from(RESERVED_WORDS + ODD_NAMES),
        hostile_texts(),
        st.text(_NAME_CHARS, min_size=1, max_size=12),
        name_of_bytes(max_bytes),
    ).filter(lambda name: _fits(name, max_bytes))


def schema_names() -> st.SearchStrategy[str]:
    """The example's schema: hostile in about half the examples (the prefix pg_ is reserved, public taken)."""
    return st.one_of(st.just("g"), hostile_texts(), identifiers()).filter(
        lambda name: not name.startswith("pg_") and name not in ("public", "information_schema")
    )


def type_names() -> st.SearchStrategy[str]:
    """Names of the enums, ranges and domains a table's columns use."""
    return st.one_of(st.just("ty"), hostile_texts(), identifiers())


class TypeNamer:
    """Names one table's types: drawn names made unique in the schema, qualified by it.

    Qualified, since a type named like a built-in one (name, record, char, text) is only reached
    through its schema; the table's own row types and the extensions' types the builtin spellings
    reach through the search path (hstore, citext) are taken from the start.
    """

    def __init__(self, schema: str, table: str):
        self.schema = schema
        partitions = [f"{table} p{i}{leaf}" for i in range(4) for leaf in ("", " s", " d")]
        self.taken = {"hstore", "citext", table, f"{table} default", *partitions}

    def fresh(self, name: str) -> str:
        """The qualified name of a new type named `name`, or `name` and a number when that is taken."""
        return f"{ident(self.schema)}.{ident(unique_name(name, self.taken))}"


def domain_ddl(sql_name: str, over: str, not_null: bool = False) -> str:
    return f"CREATE DOMAIN {sql_name} AS {over}" + (" NOT NULL" if not_null else "") + " CHECK (true)"


def _truncated(name: str, limit: int) -> str:
    while len(name.encode()) > limit:
        name = name[:-1]
    return name


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name` with a number when it is taken (cut so the result fits 63 bytes); now taken too."""
    candidate, number = _truncated(name, 63), 1
    while candidate in taken:
        suffix = f" {number}"
        candidate, number = _truncated(name, 63 - len(suffix)) + suffix, number + 1
    taken.add(candidate)
    return candidate


# ---------------------------------------------------------------------------------------------- types


@dataclasses.dataclass(eq=False)
class Base:
    """A base (element) type: its spelling, the matcher family of its values, the values it takes."""

    name: str  # what kind of type: pg_type.typname of builtins, "enum", "range", "multirange"
    sql: str  # its spelling in DDL and casts, e.g. numeric(10,2) or "mood 1"
    family: str  # the matcher of its values (matchers.FAMILIES)
    texts: st.SearchStrategy[str]  # input texts of its values
    keyable: bool = True  # btree-ordered, and its text output reads back equal: keys, partitions, WHERE targets
    partitionable: bool = False  # simple enough to partition by
    large: st.SearchStrategy[str] | None = None  # SQL expressions of values big enough to be TOASTed
    ddl: tuple[str, ...] = ()  # CREATE TYPE statements it needs

    def __repr__(self) -> str:
        return self.sql

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


@dataclasses.dataclass(eq=False)
class ColumnType:
    """A column's type: a base, maybe in an array, maybe under domains (over arrays, over domains)."""

    sql: str
    base: Base
    array: bool = False
    ddl: tuple[str, ...] = ()
    not_null: bool = False  # a NOT NULL domain: the column never holds NULL
    element_sql: str = ""  # the element type of an array, for ARRAY[...]::element[]
    element_not_null: bool = False
    keyable: bool = True
    description: str = ""

    @property
    def toastable(self) -> bool:
        return self.base.large is not None

    @property
    def comparable_sql(self) -> str:
        """The type without its domains: PostgreSQL finds no = operator for some domains over domains."""
        return self.base.sql + ("[]" if self.array else "")

    def __repr__(self) -> str:
        return f"{self.sql} ({self.description})" if self.sql != self.description else self.sql

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


_SAFE_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
ODD_STRINGS = [
    "", " ", "'", "''", '"', "\\", "\\\\", "a\nb", "\r\n", "\t", "\x01\x1f\x7f", "é", "名前", "🙂", "\u2028\u2029",
    "null", "NULL", "{}", "[1]", "NaN", "%s", "{v}", "');DROP TABLE x;--", "\\x00", "\\u0000", "  padded  ",
]  # fmt: skip


def free_text(max_size: int = 12) -> st.SearchStrategy[str]:
    """Text values (keys, enum labels, INCREMENTAL bookmarks among them): hostile in a third of them."""
    return st.one_of(st.sampled_from(ODD_STRINGS), hostile_texts(), st.text(_SAFE_TEXT, max_size=max_size))


def _chars_at_most(limit: int) -> st.SearchStrategy[str]:
    # single hostile characters too: the only hostile values a char(1) key can take
    return st.one_of(free_text(limit), st.sampled_from(HOSTILE_CHARS)).filter(lambda text: len(text) <= limit)


def _bytes_at_most(limit: int) -> st.SearchStrategy[str]:
    return free_text(limit).filter(lambda text: len(text.encode()) <= limit)


def _big_hex_sql(seed: int) -> str:
    # md5 hex does not compress, so the value is stored out of line: 250 * 32 = 8000 bytes
    return f"(SELECT string_agg(md5(g::text || '{seed}'), '') FROM generate_series(1, 250) AS g)"


_SEEDS = st.integers(0, 9)
LARGE_TEXT = _SEEDS.map(_big_hex_sql)


def _int_texts(bits: int) -> st.SearchStrategy[str]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return st.one_of(st.sampled_from([0, -1, 1, low, high]), st.integers(low, high)).map(str)


# The server_version_num the generators draw for when a test gives none: every type and value they know.
# Older servers lack some: multiranges and numeric infinities (14), numeric scales below 0 or above the precision (15).
LATEST = 180000
_NUMERIC_EDGES = ["NaN", "Infinity", "-Infinity", "0", "-0", "0.000", "1e-40", "-1.5", "0.1", "1e62", "-1e62"]


@st.composite
def _decimal_text(draw, int_digits: int, frac_digits: int) -> str:
    whole = draw(st.integers(0, 10**int_digits - 1)) if int_digits > 0 else 0
    fraction = draw(st.integers(0, 10**frac_digits - 1)) if frac_digits > 0 else 0
    sign = draw(st.sampled_from(["", "-"]))
    return f"{sign}{whole}" + (f".{fraction:0{frac_digits}d}" if frac_digits > 0 else "")


def _numeric_texts(precision: int | None, scale: int, version: int = LATEST) -> st.SearchStrategy[str]:
    if precision is None:
        huge = st.tuples(st.integers(1, 400), st.integers(0, 120)).flatmap(lambda d: _decimal_text(*d))
        edges = _NUMERIC_EDGES if version >= 140000 else [edge for edge in _NUMERIC_EDGES if "Infinity" not in edge]
        return st.one_of(st.sampled_from(edges), _decimal_text(6, 4), huge)

    @st.composite
    def fitting(draw) -> str:
        # m * 10^-scale with |m| < 10^precision fits numeric(precision, scale) exactly, for any scale sign
        digits = draw(st.integers(0, 10**precision - 1))
        # built from its digits: Decimal arithmetic would round to 28 digits (and overflow the type)
        value = Decimal((draw(st.sampled_from([0, 1])), tuple(int(d) for d in str(digits)), -scale))
        return format(value, "f")

    return st.one_of(st.just("NaN"), st.just("0"), fitting())


_FLOAT4_EDGES = ["NaN", "Infinity", "-Infinity", "-0", "0", "1.1", "3.4028235e+38", "-3.4028235e+38", "1.4e-45"]
_FLOAT8_EDGES = ["NaN", "Infinity", "-Infinity", "-0", "0.1", "1.7976931348623157e+308", "5e-324", "1e-300"]


def _float_texts(width: int) -> st.SearchStrategy[str]:
    edges = _FLOAT4_EDGES if width == 32 else _FLOAT8_EDGES
    return st.one_of(st.sampled_from(edges), st.floats(width=width, allow_nan=False, allow_infinity=False).map(repr))


def _money_text(cents: int) -> str:
    return ("-" if cents < 0 else "") + f"{abs(cents) // 100}.{abs(cents) % 100:02d}"


_MONEY = st.one_of(st.sampled_from([0, -(2**63), 2**63 - 1, 1234]), st.integers(-(2**63), 2**63 - 1)).map(_money_text)


def _year_text(year: int) -> str:
    return f"{year:04d}" if year > 0 else f"{1 - year:04d}"


def _date_text(year: int, month: int, day: int) -> str:
    # year 0 and below are BC: 0 is 1 BC, as in the proleptic calendar PostgreSQL uses
    return f"{_year_text(year)}-{month:02d}-{day:02d}" + (" BC" if year <= 0 else "")


_DATE_EDGES = ["infinity", "-infinity", "4713-01-01 BC", "0001-12-31 BC", "0001-01-01", "9999-12-31", "10000-01-01"]
_DATES = st.one_of(
    st.sampled_from(_DATE_EDGES + ["5874897-12-31", "2024-02-29"]),
    st.dates().map(lambda d: d.isoformat()),
    st.builds(_date_text, st.integers(-4711, 200000), st.integers(1, 12), st.integers(1, 28)),
)
_TIMES_OF_DAY = st.one_of(
    st.sampled_from(["00:00:00", "24:00:00", "23:59:59.999999", "12:00:00.5"]),
    st.times().map(lambda t: t.isoformat()),
)


def _timestamp_texts() -> st.SearchStrategy[str]:
    # not the last microsecond of 294276: timestamp(0) rounds it up to 294277-01-01, which PostgreSQL
    # stores but cannot read back (its own quirk: no text of that value casts to any timestamp)
    edges = [
        "infinity", "-infinity", "9999-12-31 23:59:59.999999", "10000-01-01 00:00:00", "0001-01-01 00:00:00",
        "0001-12-31 23:59:59.999999 BC", "4713-01-01 00:00:00 BC",
    ]  # fmt: skip

    @st.composite
    def ordinary(draw) -> str:
        year = draw(st.integers(-4711, 200000))
        date = f"{_year_text(year)}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}"
        clock = draw(_TIMES_OF_DAY.filter(lambda t: t != "24:00:00"))
        return f"{date} {clock}" + (" BC" if year <= 0 else "")

    return st.one_of(st.sampled_from(edges), st.datetimes().map(lambda d: d.isoformat(" ")), ordinary())


_ZONES = ["+00", "+14", "-12", "+05:30", "-03:30:15", " Europe/Amsterdam", " America/St_Johns", " Asia/Kathmandu"]


def _timestamptz_texts() -> st.SearchStrategy[str]:
    def with_zone(pair):
        text, zone = pair
        if text.endswith("infinity"):
            return text
        return text.replace(" BC", "") + zone + (" BC" if text.endswith(" BC") else "")

    return st.tuples(_timestamp_texts(), st.sampled_from(_ZONES)).map(with_zone)


_TIMETZ_ZONES = ["+00", "+15:59", "-15:59", "+05:30", "-01", "+01:02:03"]
_TIMETZ = st.tuples(_TIMES_OF_DAY, st.sampled_from(_TIMETZ_ZONES)).map("".join)

_INTERVAL_EDGES = ["0", "-1 mons", "1 year -1 days", "178956970 years 7 mons", "2562047788:00:54.775807", "@ 1 min ago"]


def _seconds_text(microseconds: int) -> str:
    # from the digits: a float's repr would say 9.5e-05, which interval input does not read
    sign = "-" if microseconds < 0 else ""
    return f"{sign}{abs(microseconds) // 10**6}.{abs(microseconds) % 10**6:06d}"


@st.composite
def _interval_text(draw) -> str:
    parts = [
        f"{draw(st.integers(-1000, 1000))} years",
        f"{draw(st.integers(-100, 100))} mons",
        f"{draw(st.integers(-10000, 10000))} days",
        f"{draw(st.integers(-100, 100))} hours",
        f"{draw(st.integers(-1000, 1000))} mins",
        _seconds_text(draw(st.integers(-(10**8), 10**8))) + " secs",
    ]
    return " ".join(draw(st.lists(st.sampled_from(parts), min_size=1, max_size=4, unique=True)))


_INTERVALS = st.one_of(st.sampled_from(_INTERVAL_EDGES), _interval_text())


@st.composite
def _inet(draw, network: bool) -> str:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    address = draw(st.integers(0, 2**bits - 1))
    prefix = draw(st.integers(0, bits))
    if network:
        return str(ipaddress.ip_network((address >> (bits - prefix) << (bits - prefix), prefix), strict=True))
    host = ipaddress.ip_address(address) if version == 4 else ipaddress.IPv6Address(address)
    return f"{host}/{prefix}" if draw(st.booleans()) else str(host)


def _mac(count: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=count, max_size=count).map(lambda raw: ":".join(f"{b:02x}" for b in raw))


_XML = st.one_of(
    st.sampled_from(["", "plain", "<a/>", '<a b="1">x &amp; y &lt;z&gt;</a>', '<?xml version="1.0"?><r>é</r>']),
    st.tuples(st.sampled_from(["a", "row", "x1"]), st.text("abc é名🙂'\"\n\t", max_size=8)).map(
        lambda pair: f"<{pair[0]}>{pair[1]}</{pair[0]}>"
    ),
)


def _lexeme(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


_LEXEMES = st.text("ab cé名'\\-:", min_size=1, max_size=6)
_TSVECTOR = st.lists(st.tuples(_LEXEMES, st.sampled_from(["", ":1", ":2A", ":3B,4C", ":1D"])), max_size=4).map(
    lambda items: " ".join(_lexeme(text) + weight for text, weight in items)
)
_TSQUERY = st.sampled_from(["a & b", "a | !b", "a <-> b", "a:*", "(a | b) & c", "'it''s' & 'x y'", "!a"])
_PG_LSN = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda p: f"{p[0]:X}/{p[1]:X}")

_COORD = st.one_of(
    st.sampled_from(["0", "-0", "1.5", "-2", "1e+300", "0.1"]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6).map(repr),
)
_POINT = st.tuples(_COORD, _COORD).map(lambda p: f"({p[0]},{p[1]})")
_GEOMETRY = {
    "point": st.one_of(_POINT, st.just("(NaN,Infinity)")),
    "line": st.tuples(st.sampled_from(["1", "-1", "2.5"]), _COORD, _COORD).map(lambda p: f"{{{p[0]},{p[1]},{p[2]}}}"),
    "lseg": st.tuples(_POINT, _POINT).map(lambda p: f"[{p[0]},{p[1]}]"),
    "box": st.tuples(_POINT, _POINT).map(lambda p: f"{p[0]},{p[1]}"),
    "path": st.tuples(st.lists(_POINT, min_size=1, max_size=4), st.booleans()).map(
        lambda p: ("[{}]" if p[1] else "({})").format(",".join(p[0]))
    ),
    "polygon": st.lists(_POINT, min_size=1, max_size=4).map(lambda points: "(" + ",".join(points) + ")"),
    "circle": st.tuples(_POINT, st.sampled_from(["0", "1", "2.5"])).map(lambda p: f"<{p[0]},{p[1]}>"),
}


def _json_number() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["0", "-0", "1.0", "1e400", "-1E-400", "0.1000", "12345678901234567890123", "1.5e+3"]),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )


def _json_strings(nul: bool) -> st.SearchStrategy[str]:
    text = free_text(8)
    if nul:
        text = st.one_of(text, st.just("a\x00b"))  # json keeps \u0000; jsonb refuses it
    return st.tuples(text, st.booleans()).map(lambda p: json.dumps(p[0], ensure_ascii=p[1]))


def _json_texts(nul: bool) -> st.SearchStrategy[str]:
    scalars = st.one_of(st.sampled_from(["null", "true", "false"]), _json_number(), _json_strings(nul))
    space = st.sampled_from(["", " ", "\n"])

    def containers(children):
        arrays = st.tuples(st.lists(children, max_size=3), space).map(lambda p: "[" + ("," + p[1]).join(p[0]) + "]")
        # key lists, not dicts: duplicate keys are valid json (the last one wins in jsonb)
        members = st.lists(st.tuples(_json_strings(nul), children), max_size=3)
        objects = st.tuples(members, space).map(
            lambda p: "{" + ("," + p[1]).join(f"{key}:{p[1]}{value}" for key, value in p[0]) + "}"
        )
        return arrays | objects

    values = st.recursive(scalars, containers, max_leaves=6)
    # mostly objects and arrays, the documented schema; scalars at the top are valid json too
    return st.one_of(containers(values), containers(values), scalars)


def _hstore_text(pairs: list[tuple[str, str | None]]) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return ", ".join(f"{quoted(key)}=>{'NULL' if value is None else quoted(value)}" for key, value in pairs)


_HSTORE = st.lists(st.tuples(free_text(6), st.none() | free_text(6)), max_size=3).map(_hstore_text)


def _large_json(seed: int) -> str:
    return f"jsonb_build_object('big', {_big_hex_sql(seed)})"


def _range_text(bounds: st.SearchStrategy[str], order) -> st.SearchStrategy[str]:
    """Ranges of sorted bound pairs, unbounded sides and 'empty'."""

    @st.composite
    def ranges(draw) -> str:
        low, high = sorted([draw(bounds), draw(bounds)], key=order)
        if draw(st.booleans()):
            low = ""
        if draw(st.booleans()):
            high = ""
        brackets = draw(st.sampled_from(["[)", "(]", "[]", "()"]))
        quote = lambda text: f'"{text}"' if text else ""  # noqa: E731
        return f"{brackets[0]}{quote(low)},{quote(high)}{brackets[1]}"

    return st.one_of(st.just("empty"), ranges())


def _date_order(text: str):
    return text  # ISO dates within 1..9999 sort as text


_RANGE_SUBTYPES = {
    # below the maximum: a range is stored as [low, high), so an inclusive maximum would overflow
    "int4range": (st.integers(-(2**31), 2**31 - 2).map(str), int),
    "int8range": (st.integers(-(2**63), 2**63 - 2).map(str), int),
    "numrange": (_decimal_text(5, 3), Decimal),
    "daterange": (st.dates().map(lambda d: d.isoformat()), _date_order),
    "tsrange": (st.datetimes().map(lambda d: d.isoformat(" ")), _date_order),
    "tstzrange": (st.datetimes().map(lambda d: d.isoformat(" ") + "+00"), _date_order),
}


def _builtin(name: str, sql: str, family: str, texts, **kwargs) -> Base:
    return Base(name=name, sql=sql, family=family, texts=texts, **kwargs)


@st.composite
def base_types(draw, types: TypeNamer, version: int = LATEST) -> Base:
    """A base type the server of `version` (server_version_num) has; enums and ranges of their own get names from `types`."""
    # enums six times over: their type names and labels (keys, bookmarks) are where hostile names
    # reach the tap's SQL as type names read from the server
    kinds = [
        "int4", "int2", "int8", "oid", "numeric", "numeric(p,s)", "float4", "float8", "money", "bool", "bit",
        "varbit", "bpchar", "varchar", "text", "citext", "name", "uuid", "json", "jsonb", "hstore", "date",
        "timestamp", "timestamptz", "time", "timetz", "interval", "inet", "cidr", "macaddr", "macaddr8",
        "bytea", "xml", "tsvector", "tsquery", "pg_lsn", "point", "line", "lseg", "box", "path", "polygon",
        "circle", "enum", "range", "multirange", "enum", "enum", "enum", "enum", "enum",
    ]  # fmt: skip
    kind = draw(st.sampled_from(kinds if version >= 140000 else [kind for kind in kinds if kind != "multirange"]))
    precision = draw(st.sampled_from(["", "(0)", "(3)", "(6)"]))
    if kind in ("int2", "int4", "int8"):
        bits = {"int2": 16, "int4": 32, "int8": 64}[kind]
        sql = {"int2": "smallint", "int4": "integer", "int8": "bigint"}[kind]
        return _builtin(kind, sql, "integer", _int_texts(bits), partitionable=True)
    if kind == "oid":
        return _builtin("oid", "oid", "integer", st.integers(0, 2**32 - 1).map(str))
    if kind == "numeric":
        return _builtin("numeric", "numeric", "numeric", _numeric_texts(None, 0, version), partitionable=True)
    if kind == "numeric(p,s)":
        p = draw(st.sampled_from([1, 2, 5, 10, 38, 39, 100, 101, 1000]))
        low, high = (-1000, 1000) if version >= 150000 else (0, p)
        s = draw(st.sampled_from([0, 2, -3, p, p + 2, 38, 39]).filter(lambda s: low <= s <= high))
        return _builtin("numeric", f"numeric({p},{s})", "numeric", _numeric_texts(p, s), partitionable=True)
    if kind in ("float4", "float8"):
        sql = "real" if kind == "float4" else "double precision"
        return _builtin(kind, sql, "float", _float_texts(32 if kind == "float4" else 64))
    if kind == "money":
        return _builtin("money", "money", "string", _MONEY)
    if kind == "bool":
        return _builtin("bool", "boolean", "boolean", st.sampled_from(["true", "false"]), partitionable=True)
    if kind == "bit":
        length = draw(st.sampled_from([1, 1, 3, 64]))
        bits = st.text("01", min_size=length, max_size=length)
        sql = draw(st.sampled_from(["bit", "bit(1)"])) if length == 1 else f"bit({length})"
        return _builtin("bit", sql, "bit1" if length == 1 else "string", bits)
    if kind == "varbit":
        length = draw(st.sampled_from([None, 1, 5]))
        sql = "bit varying" if length is None else f"bit varying({length})"
        return _builtin("varbit", sql, "string", st.text("01", max_size=length or 70))
    if kind == "bpchar":
        length = draw(st.sampled_from([1, 4, 20]))
        return _builtin("bpchar", f"character({length})", "string", _chars_at_most(length), partitionable=True)
    if kind == "varchar":
        length = draw(st.sampled_from([None, 1, 10]))
        sql = "character varying" if length is None else f"character varying({length})"
        large = LARGE_TEXT if length is None else None
        return _builtin("varchar", sql, "string", _chars_at_most(length or 30), partitionable=True, large=large)
    if kind in ("text", "citext"):
        return _builtin(kind, kind, "string", free_text(), partitionable=kind == "text", large=LARGE_TEXT)
    if kind == "name":
        return _builtin("name", "name", "string", _bytes_at_most(63))
    if kind == "uuid":
        return _builtin("uuid", "uuid", "string", st.uuids().map(str), partitionable=True)
    if kind == "json":
        return _builtin("json", "json", "json", _json_texts(nul=True), keyable=False, large=_SEEDS.map(_large_json))
    if kind == "jsonb":
        return _builtin("jsonb", "jsonb", "json", _json_texts(nul=False), large=_SEEDS.map(_large_json))
    if kind == "hstore":
        return _builtin("hstore", "hstore", "hstore", _HSTORE)
    if kind == "date":
        return _builtin("date", "date", "date", _DATES, partitionable=True)
    if kind == "timestamp":
        return _builtin("timestamp", f"timestamp{precision} without time zone", "timestamp", _timestamp_texts(),
                        partitionable=True)  # fmt: skip
    if kind == "timestamptz":
        return _builtin("timestamptz", f"timestamp{precision} with time zone", "timestamptz",
                        _timestamptz_texts(), partitionable=True)  # fmt: skip
    if kind == "time":
        return _builtin("time", f"time{precision} without time zone", "time", _TIMES_OF_DAY)
    if kind == "timetz":
        return _builtin("timetz", f"time{precision} with time zone", "timetz", _TIMETZ)
    if kind == "interval":
        return _builtin("interval", f"interval{precision}", "string", _INTERVALS)
    if kind in ("inet", "cidr"):
        return _builtin(kind, kind, "string", _inet(network=kind == "cidr"))
    if kind in ("macaddr", "macaddr8"):
        return _builtin(kind, kind, "string", _mac(6 if kind == "macaddr" else 8))
    if kind == "bytea":
        large = _SEEDS.map(lambda seed: f"decode({_big_hex_sql(seed)}, 'hex')")
        return _builtin("bytea", "bytea", "bytea", st.binary(max_size=12).map(lambda b: "\\x" + b.hex()), large=large)
    if kind == "xml":
        return _builtin("xml", "xml", "string", _XML, keyable=False, large=LARGE_TEXT)
    if kind == "tsvector":
        return _builtin("tsvector", "tsvector", "string", _TSVECTOR)
    if kind == "tsquery":
        return _builtin("tsquery", "tsquery", "string", _TSQUERY)
    if kind == "pg_lsn":
        return _builtin("pg_lsn", "pg_lsn", "string", _PG_LSN)
    if kind in _GEOMETRY:
        return _builtin(kind, kind, "string", _GEOMETRY[kind], keyable=False)
    if kind == "enum":
        labels = draw(st.lists(st.one_of(st.sampled_from(ODD_STRINGS), identifiers()).filter(_label_fits),
                               min_size=1, max_size=5, unique=True))  # fmt: skip
        return enum_type(types.fresh(draw(type_names())), labels)
    subtype = draw(st.sampled_from([*_RANGE_SUBTYPES, "float8"]))
    if subtype == "float8":
        range_sql, multirange_sql = types.fresh(draw(type_names())), types.fresh(draw(type_names()))
        multirange = f", multirange_type_name = {multirange_sql}" if version >= 140000 else ""
        ddl = (f"CREATE TYPE {range_sql} AS RANGE (subtype = float8{multirange})",)
        bounds, order = st.sampled_from(["-Infinity", "Infinity", "0", "1.5", "-2", "1e+300"]), float
    else:
        ddl = ()
        bounds, order = _RANGE_SUBTYPES[subtype]
        range_sql, multirange_sql = subtype, subtype.replace("range", "multirange")
    ranges = _range_text(bounds, order)
    if kind == "range":
        return Base("range", range_sql, "string", ranges, ddl=ddl)
    multiranges = st.lists(ranges, max_size=3).map(lambda items: "{" + ",".join(items) + "}")
    return Base("multirange", multirange_sql, "string", multiranges, ddl=ddl)


def enum_type(sql_name: str, labels: list[str]) -> Base:
    """An enum of these labels; `sql_name` is its qualified name."""
    ddl = f"CREATE TYPE {sql_name} AS ENUM ({', '.join(string(label) for label in labels)})"
    return Base("enum", sql_name, "string", st.sampled_from(labels), partitionable=True, ddl=(ddl,))


def _label_fits(label: str) -> bool:
    return len(label.encode()) <= 63 and "\x00" not in label


# Domains over domains this deep map to their base type as one domain does.
DEEP_DOMAINS = 20


@st.composite
def column_types(draw, types: TypeNamer, version: int = LATEST) -> ColumnType:
    """A column type: a base, in an array or not, under 0-2 domains (over the base, the array or a domain)."""
    base = draw(base_types(types, version))
    ddl = list(base.ddl)
    sql, description = base.sql, base.sql
    not_null = element_not_null = False

    def domain(over: str) -> tuple[str, bool]:
        name = types.fresh(draw(type_names()))
        strict = draw(st.integers(0, 9)) == 9  # a NOT NULL domain, now and then (shrinks to none)
        ddl.append(domain_ddl(name, over, strict))
        return name, strict

    depth = draw(st.sampled_from([0, 0, 0, 1, 2]))
    if draw(st.integers(0, 19)) == 19:
        depth = DEEP_DOMAINS  # now and then a stack deeper than any fixed walk (shrinks to none)
    for _ in range(depth):
        sql, strict = domain(sql)
        not_null = not_null or strict
        description = f"domain over {description}"
    array = draw(st.integers(0, 3)) == 3
    element_sql = ""
    if array:
        element_sql, element_not_null = sql, not_null
        sql, not_null = sql + "[]", False
        description = f"array of {description}"
        if draw(st.integers(0, 3)) == 3:
            sql, strict = domain(sql)
            not_null = strict
            description = f"domain over {description}"
    return ColumnType(
        sql=sql,
        base=base,
        array=array,
        ddl=tuple(ddl),
        not_null=not_null,
        element_sql=element_sql,
        element_not_null=element_not_null,
        keyable=base.keyable,
        description=description,
    )


# ---------------------------------------------------------------------------------------------- values


def scalar_values(column_type: ColumnType, *, large: bool = True) -> st.SearchStrategy[str]:
    """SQL expressions of non-NULL values of the column's base type (elements, for arrays)."""
    base = column_type.base
    target = column_type.element_sql if column_type.array else column_type.sql
    texts = base.texts.map(lambda text: f"{string(text)}::{target}")
    if large and base.large is not None:
        return st.one_of(texts, base.large.map(lambda sql: f"({sql})::{target}"))
    return texts


@st.composite
def array_value(draw, column_type: ColumnType) -> str:
    """ARRAY[...] of elements (NULL among them unless the element is a NOT NULL domain); empty, or 2-D."""
    element = scalar_values(column_type, large=False)
    if not column_type.element_not_null:
        element = st.one_of(element, st.just("NULL"))
    array_sql = column_type.element_sql + "[]"
    shape = draw(st.sampled_from(["1d", "1d", "empty", "2d", "3d"]))
    if shape == "empty":
        value = f"'{{}}'::{array_sql}"
    elif shape == "1d":
        value = f"ARRAY[{', '.join(draw(st.lists(element, min_size=1, max_size=4)))}]::{array_sql}"
    else:
        rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        depth = 2 if shape == "2d" else 3

        def block(level: int) -> str:
            if level == depth:
                return "[" + ", ".join(draw(element) for _ in range(cols)) + "]"
            return "[" + ", ".join(block(level + 1) for _ in range(rows if level == 1 else 2)) + "]"

        value = f"ARRAY{block(1)}::{array_sql}"
    # a domain over the array type takes the array, then the cast
    return value if column_type.sql == array_sql else f"({value})::{column_type.sql}"


def inserted_values(column: Column, large: bool = True) -> st.SearchStrategy[str]:
    """SQL expressions an INSERT gives a column: DEFAULT for a generated one."""
    if column.generation is not None:
        return st.just("DEFAULT")
    return column_values(column.type, column.nullable, large=large)


def column_values(column_type: ColumnType, nullable: bool, large: bool = True) -> st.SearchStrategy[str]:
    """SQL expressions of the values a column takes, NULL included when it may hold NULL."""
    values = array_value(column_type) if column_type.array else scalar_values(column_type, large=large)
    if nullable and not column_type.not_null:
        return st.one_of(st.just("NULL"), values)
    return values


# ---------------------------------------------------------------------------------------------- tables


@dataclasses.dataclass(eq=False)
class Column:
    name: str
    type: ColumnType
    not_null: bool
    generation: str | None = None  # GENERATED ALWAYS AS (this) STORED; rows and inserts give it DEFAULT

    @property
    def nullable(self) -> bool:
        return not self.not_null

    def __repr__(self) -> str:
        return f"{self.name!r} {self.type!r}" + (" NOT NULL" if self.not_null else "")

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


@dataclasses.dataclass(eq=False)
class Partitioning:
    method: str  # RANGE or LIST
    column: int
    partitions: int  # 1-3 besides the DEFAULT partition
    sub_column: int | None  # the last partition is partitioned again by LIST on this column


@dataclasses.dataclass(eq=False)
class Table:
    """One random table: its schema, columns, key, partitioning, replica identity and initial rows."""

    name: str
    schema: str  # a schema of its own, dropped before and after the example
    columns: list[Column]
    primary_key: list[int]
    partitioning: Partitioning | None
    replica_identity: str  # DEFAULT or FULL
    rows: list[list[str]]

    @property
    def ddl(self) -> list[str]:
        seen, statements = set(), []
        for column in self.columns:
            for statement in column.type.ddl:
                if statement not in seen:
                    seen.add(statement)
                    statements.append(statement)
        return statements

    def key_columns(self) -> list[Column]:
        return [self.columns[index] for index in self.primary_key]

    def __repr__(self) -> str:
        # the example's SQL script says it all; this names the shape hypothesis shrank to
        return (
            f"Table({self.schema!r}.{self.name!r}, columns={self.columns!r}, key={self.primary_key}, "
            f"partitioning={self.partitioning}, replica_identity={self.replica_identity}, {len(self.rows)} rows)"
        )

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


# the type of a generated column: not a key, not partitioned by
GENERATED_TYPE = ColumnType(
    sql="integer", base=_builtin("int4", "integer", "integer", _int_texts(32)), keyable=False, description="generated"
)


@st.composite
def tables(draw, max_columns: int = 5, max_rows: int = 6, min_columns: int = 1, version: int = LATEST) -> Table:
    """A table of 1-5 columns (or min_columns to max_columns) of random names and types with a few rows, of
    types the server of `version` (server_version_num) has."""
    names = draw(st.lists(identifiers(), min_size=min_columns, max_size=max_columns, unique=True))
    # 50 bytes: the partitions' names add up to 8
    table_name = draw(st.one_of(st.just("t"), identifiers(50)))
    schema = draw(schema_names())
    types = TypeNamer(schema, table_name)
    columns = []
    for name in names:
        column_type = draw(column_types(types, version))
        columns.append(Column(name=name, type=column_type, not_null=column_type.not_null or draw(st.booleans())))
    if draw(st.integers(0, 2)) == 2:
        # how many of the other columns are NULL: pgoutput does not send it, so the tap evaluates the
        # expression over every column of the change (any type, any name, TOASTed values left out)
        generated = Column(
            name=unique_name("generated", set(names)),
            type=GENERATED_TYPE,
            not_null=False,
            generation=f"num_nulls({', '.join(ident(column.name) for column in columns)})",
        )
        columns.insert(draw(st.integers(0, len(columns))), generated)
    keyable = [index for index, column in enumerate(columns) if column.type.keyable]
    primary_key = draw(st.lists(st.sampled_from(keyable), unique=True, max_size=3)) if keyable else []
    for index in primary_key:
        columns[index].not_null = True
    partitioning = None
    can_partition = [
        index
        for index, column in enumerate(columns)
        if column.type.base.partitionable and not column.type.array and (not primary_key or index in primary_key)
    ]
    if can_partition and draw(st.integers(0, 3)) == 3:
        column = draw(st.sampled_from(can_partition))
        sub = draw(st.one_of(st.none(), st.sampled_from(can_partition)))
        partitioning = Partitioning(draw(st.sampled_from(["RANGE", "LIST"])), column, draw(st.integers(1, 3)), sub)
    # a key value must fit in a btree entry: no TOASTed values in key columns
    values = [inserted_values(c, large=index not in primary_key) for index, c in enumerate(columns)]
    rows = draw(st.lists(st.tuples(*values).map(list), max_size=max_rows))
    return Table(
        name=table_name,
        schema=schema,
        columns=columns,
        primary_key=primary_key,
        partitioning=partitioning,
        replica_identity=draw(st.sampled_from(["DEFAULT", "FULL"])),
        rows=rows,
    )


# ---------------------------------------------------------------------------------------------- DML


@dataclasses.dataclass(eq=False)
class Op:
    """One change: insert a row, update some columns of a row, delete a row, or give a row a new key."""

    kind: str  # insert, update, delete, rekey
    target: int  # which untouched row (modulo their number)
    values: list[str]  # one SQL expression per column (insert: all; update: those in `columns`)
    columns: list[int]  # the columns an update sets


@st.composite
def dml_plans(draw, table: Table) -> list[Op]:
    """A few single-row changes, each row touched at most once (the test then knows every row's last state)."""
    all_values = st.tuples(
        *(inserted_values(c, large=i not in table.primary_key) for i, c in enumerate(table.columns))
    ).map(list)
    ops = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["insert", "update", "update", "delete", "rekey"]))
        ops.append(Op(kind, draw(st.integers(0, 50)), draw(all_values), draw(st.lists(st.integers(0, 50), max_size=2))))
    return ops


# ---------------------------------------------------------------------------------------------- fixed examples


def _qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def _domain_over(sql_name: str, over: ColumnType) -> ColumnType:
    return dataclasses.replace(
        over, sql=sql_name, ddl=(*over.ddl, domain_ddl(sql_name, over.sql)), description=f"domain over {over.sql}"
    )


def _domains_over(schema: str, prefix: str, over: ColumnType, depth: int) -> ColumnType:
    """Domains prefix, prefix1, ... each over the one before, the first over `over`: `depth` levels."""
    for level in range(depth):
        over = _domain_over(_qualified(schema, prefix + (str(level) if level else "")), over)
    return dataclasses.replace(over, description=f"{depth} domains over {over.base.sql}")


def _plain(base: Base) -> ColumnType:
    return ColumnType(sql=base.sql, base=base, ddl=base.ddl, keyable=base.keyable, description=base.sql)


def _row(columns: list[Column], *texts: str | None) -> list[str]:
    """The SQL values of a row of these texts (None: NULL)."""
    return [
        "NULL" if text is None else f"{string(text)}::{column.type.sql}"
        for text, column in zip(texts, columns, strict=True)
    ]


def hostile_tables() -> list[tuple[Table, dict]]:
    """Tables named and filled with the issue's hostile characters, run in every bounded run besides the random ones.

    Each comes with the draws the tests would make (itersize, replication key, changes).
    """
    schema = "s{v}%(x)s';\"\\"
    labels = ["%", "{text}", "a'b", "\t;\\", "%(x)s", "{0}", '"', "\x01\x1f\x7f", "%s{v}"]
    mood = _plain(enum_type(_qualified(schema, "x{text}y"), labels))
    text = _plain(_builtin("text", "text", "string", free_text()))
    char1 = _plain(_builtin("bpchar", "character(1)", "string", _chars_at_most(1)))
    columns = [
        Column("{v}", mood, not_null=True),
        Column("%s", _domain_over(_qualified(schema, "e{v}"), text), not_null=False),
        Column("%(x)s;", _domain_over(_qualified(schema, "%s{}"), mood), not_null=False),
        Column("'", char1, not_null=True),
    ]

    enum_keyed = Table(
        name="t{text}\t%s;",  # a tab: wal2json's add-tables needs it escaped
        schema=schema,
        columns=columns,
        primary_key=[0],
        partitioning=None,
        replica_identity="DEFAULT",
        rows=[
            _row(columns, "%", "{v}%s", "{0}", "{"),
            _row(columns, "{text}", "\x01;\t", None, "'"),
            _row(columns, "a'b", "%%", '"', "\\"),
        ],
    )
    enum_draws = {
        "itersize": 1,
        "replication key": "{v}",
        "changes": [
            Op("insert", 0, _row(columns, "%(x)s", "}", "%", ";"), []),
            Op("update", 0, _row(columns, "%", "{0}{1}", "\t;\\", "%"), [0, 1]),
            Op("delete", 0, _row(columns, "%", None, None, "x"), []),
            Op("rekey", 0, _row(columns, "{0}", None, None, "x"), []),
        ],
    }
    schema = "{0},\n%(x)s"  # a comma: filter_schemas cannot name it
    varchar = _plain(_builtin("varchar", "character varying(10)", "string", _chars_at_most(10)))
    columns = [
        Column("\n", text, not_null=True),
        Column("{}", _domains_over(schema, "{", varchar, DEEP_DOMAINS), not_null=False),
        Column("%%", _plain(enum_type(_qualified(schema, "}"), ["{v}", "%s", "'", "\\"])), not_null=False),
    ]
    text_keyed = Table(
        name="%",
        schema=schema,
        columns=columns,
        primary_key=[0],
        partitioning=Partitioning("LIST", column=0, partitions=2, sub_column=None),
        replica_identity="FULL",
        rows=[
            _row(columns, "%s", "{text}", "{v}"),
            _row(columns, "{v}", "%(x)s", "%s"),
            _row(columns, "\x01\x1f\x7f", None, "'"),
            _row(columns, "a'b\"c;--", "\\", None),
            _row(columns, "\\", "\t\n", "\\"),
        ],
    )
    text_draws = {
        "itersize": 2,
        "replication key": "\n",
        "changes": [
            Op("insert", 0, _row(columns, "}{", "%%", "%s"), []),
            Op("update", 1, _row(columns, "x", "{0}", "'"), [0]),
            Op("delete", 2, _row(columns, "x", None, None), []),
        ],
    }
    return [(enum_keyed, enum_draws), (text_keyed, text_draws)]
