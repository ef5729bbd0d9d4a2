"""Hypothesis strategies of STATE files: valid bookmarks, and every way a saved or hand-edited one goes wrong.

Each bookmark key draws either a value the tap wrote itself (first, so failures shrink towards it)
or a hostile one: another JSON type, an out-of-range number, text that is no value of the key's
type, a list of the wrong length. Keys go missing, unknown keys and streams appear, and the whole
state may come wrapped in its STATE message. WAL positions and transaction ids move while the
suite runs, so the strategies draw them as `Live` placeholders that `resolve` turns into the
server's values just before the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from statefuzz.tables import TABLES, Table

METHODS = ("FULL_TABLE", "INCREMENTAL", "LOG_BASED")
ABSENT = object()  # a key left out
UNKNOWN_STREAMS = ("public-missing", "missing", "", "public-int_keyed ", "PUBLIC-INT_KEYED", "public.int_keyed")


@dataclasses.dataclass(frozen=True)
class Live:
    """A value read from the server when the example runs.

    `what`: `slot` (the slot's confirmed_flush_lsn), `wal` (pg_current_wal_lsn()), `xmin` (the
    current snapshot's xmin), `snapshot` (pg_current_snapshot() text) or `origin` (the bookmark
    `origin` of this server, database and slot, as the tap writes it, or with `form` "another slot"
    that of another slot); `offset` is added to the
    number; `form` writes it as an `int`, as `X/Y` text or as a `float` (`1234.0`).
    """

    what: str
    offset: int = 0
    form: str = "int"


def resolve(value: Any, live: dict[str, Any]) -> Any:
    """Replace every Live placeholder in `value` with the server's value."""
    if isinstance(value, Live):
        if value.what == "origin" and value.form == "another slot":
            return {**live["origin"], "slot": "pipelinewise_other"}
        if value.what in ("snapshot", "origin"):
            return live[value.what]
        number = live[value.what] + value.offset
        if value.form == "text":
            return f"{number >> 32:X}/{number & 0xFFFFFFFF:X}" if 0 <= number < 2**64 else f"-/{number}"
        return Decimal(number).quantize(Decimal("0.0")) if value.form == "float" else number
    if isinstance(value, dict):
        return {name: resolve(item, live) for name, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, live) for item in value]
    return value


def to_json(value: Any) -> str:
    """JSON text of a state: Decimals as the exact numbers they are, NaN and Infinity as Python writes them."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else json.dumps(float(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(name))}: {to_json(item)}" for name, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


# ------------------------------------------------------------------------------------- hostile values

ODD_NUMBERS = (-1, 0, 2**31, 2**63, 2**64, 10**30, -(10**30), 1.5, -0.0, Decimal("1e400"), Decimal("0.1"))
ODD_NUMBERS += (math.nan, math.inf, -math.inf)
ODD_TEXTS = ("", "abc", "1", "-1", "NaN", "null", "true", "0/0", "1/2/3", "ZZ/1", "%s", "{x}", "10% off")
ODD_TEXTS += ("50%% done", "2020-13-45", "'; DROP TABLE int_keyed; --", "\x00", "😀", "1e400", " 1 ")
ODD_SCALARS = st.sampled_from((None, True, False, *ODD_NUMBERS, *ODD_TEXTS))

junk = st.recursive(
    ODD_SCALARS | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4,
)
"""Any JSON value, biased towards the ones that break a parser: the catch-all hostile value."""


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Draw from each strategy in proportion to its weight; shrinking goes towards the first.

    (st.one_of draws its distinct branches evenly, however often one is repeated.)
    """
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)


# ------------------------------------------------------------------------------------- bookmark values


@dataclasses.dataclass(frozen=True)
class Key:
    """A bookmark key's values: `good` ones the tap writes itself, `hostile` ones it must refuse or survive."""

    good: st.SearchStrategy
    hostile: st.SearchStrategy

    def any(self) -> st.SearchStrategy:
        """Good three times as often as hostile (and shrinking goes towards good)."""
        return weighted((3, self.good), (1, self.hostile))


LSN_OFFSETS = {"slot": [0, -1, -(2**20)], "wal": [0, -1]}
LSN = Key(
    good=st.one_of(
        *(
            st.builds(Live, st.just(what), st.sampled_from(offsets), st.sampled_from(["int", "int", "text"]))
            for what, offsets in LSN_OFFSETS.items()
        )
    ),
    hostile=st.one_of(
        st.builds(Live, st.just("wal"), st.sampled_from([1, 2**40]), st.sampled_from(["int", "text"])),
        st.builds(Live, st.sampled_from(["slot", "wal"]), st.sampled_from([0, -1]), st.just("float")),
        st.sampled_from([2**64, 2**64 + 1, 2**70, -1, "FFFFFFFF/FFFFFFFF", "0/1/2", "x/y", "1/G", "0x10", "16"]),
        junk,
    ),
)
"""`lsn`: the slot's position or the WAL's (an int or `X/Y`) or before; after the WAL end, a float, no LSN at all."""

VERSION = Key(
    good=st.integers(1, 2**41) | st.just(1700000000000),
    hostile=st.sampled_from([0, -1, 2**63, 10**30, 1.5, -0.0, Decimal("1e400"), "1700000000000", True]) | junk,
)
SNAPSHOT_XMIN = Key(
    good=st.builds(Live, st.just("xmin"), st.sampled_from([0, -1, -100])),
    hostile=st.builds(Live, st.just("xmin"), st.sampled_from([1, 2**32, -(2**40)])) | junk,
)
COPY_SNAPSHOT = Key(
    good=st.fixed_dictionaries({"snapshot": st.builds(Live, st.just("snapshot")), "lsn": LSN.good}),
    hostile=st.fixed_dictionaries(
        {},
        optional={
            "snapshot": st.sampled_from(["1:1:", "3:10:4,5", "10:3:", "1:2", "a:b:c", "1:2:x", "", ":::", "-1:-1:"])
            | st.builds(Live, st.just("snapshot"))
            | junk,
            "lsn": LSN.any(),
            "xmin": junk,
        },
    )
    | junk,
)


FOREIGN_ORIGINS = st.fixed_dictionaries(
    {
        "system_identifier": st.sampled_from(["1", None]),
        "database_oid": st.sampled_from([1, 4242]),
        "dbname": st.sampled_from(["other", ""]),
    },
    optional={"slot": st.sampled_from(["pipelinewise_other", None])},
)
ORIGIN = Key(
    good=st.builds(Live, st.just("origin")),
    hostile=st.one_of(
        FOREIGN_ORIGINS,
        st.just(Live("origin", 0, "another slot")),
        st.fixed_dictionaries(
            {}, optional={key: junk for key in ("system_identifier", "database_oid", "dbname", "slot", "extra")}
        ),
        junk,
    ),
)
"""`origin`: this database's, or another database's, server's or slot's, or of the wrong shape."""


def methods(method: str) -> Key:
    """`last_replication_method`: the stream's; another one, or something no method is called."""
    return Key(st.just(method), st.sampled_from([*METHODS, method.lower(), "", "LOGICAL"]) | junk)


def text_of_kind(kind: str) -> st.SearchStrategy:
    """Text of a value of `kind`, as a key's value is written in `resume_key`."""
    if kind == "int":
        return st.sampled_from(["1", "2", "3", "-5", "10", "2147483647", "0", "4"]) | st.integers(-99, 99).map(str)
    if kind == "timestamp":
        return st.sampled_from(["2020-01-01 00:00:00", "2020-02-29 12:34:56.5", "2020-01-01T00:00:00+00:00"])
    return st.sampled_from(["10% off", "50%% done", "{x}", "it's", '"quoted"', "", "eu", "us%", "{a}", "zz"])


def resume_keys(table: Table) -> Key:
    """`resume_key`: a key of the table (or between its keys); a list of the wrong length or types, or no list."""
    kinds = [table.kind_of(column) for column in table.primary_key]
    lengths = [length for length in range(4) if length != len(kinds)]
    wrong_length = st.sampled_from(lengths).flatmap(lambda n: st.lists(text_of_kind("text"), min_size=n, max_size=n))
    wrong_type = st.lists(ODD_SCALARS, min_size=len(kinds), max_size=len(kinds))
    return Key(
        good=st.tuples(*(text_of_kind(kind) for kind in kinds)).map(list) | st.just(None),
        hostile=st.one_of(wrong_length, wrong_type, st.lists(st.integers(-9, 9), min_size=1, max_size=3), junk),
    )


def replication_key_values(table: Table, column: str) -> Key:
    """`replication_key_value`: a value of the column's type as the tap writes it; one of another type."""
    kind = table.kind_of(column)
    if kind == "int":
        good = st.sampled_from([1, 2, 3, 10, -5, 2147483647, 0, 4, -(2**31)]) | st.integers(-20, 20)
        wrong = st.sampled_from(["3", "abc", 2.5, 10**30, 2**31, "NaN", True, [3], {"v": 3}])
    elif kind == "timestamp":
        good = st.sampled_from(
            [
                "2020-01-01T00:00:00+00:00",
                "2020-02-29T12:34:56.789+00:00",
                "2019-12-31T23:59:59.999999+00:00",
                "2020-01-01",
                "2020-06-01T00:00:00",
                "2024-01-01T00:00:00.000001+00:00",
                "2099-12-31T00:00:00+00:00",
                "9999-12-31T23:59:59.999999+00:00",
                "0001-01-01T00:00:00+00:00",
                "2020-01-01T00:00:00+05:30",
            ]
        )
        wrong = st.sampled_from(["2020-13-45", "2020-02-30T00:00:00+00:00", "yesterday", "", 1577836800, 1.5, True])
    else:
        good = st.sampled_from(["10% off", "50%% done", "{x}", "{}", "%s", "it's", '"quoted"', "", "m", "zzz"])
        good |= st.text(max_size=5)
        wrong = st.sampled_from([1, -1, 2.5, 10**30, True, ["a"], {"a": 1}, "\x00"])
    return Key(good, wrong | junk)


def replication_keys(table: Table, column: str) -> Key:
    """`replication_key`: the catalog's; another column, a column that does not exist, or no name."""
    others = [name for name, _ in table.columns if name != column] + ["missing", "", column.upper()]
    return Key(st.just(column), st.sampled_from(others) | junk)


# ------------------------------------------------------------------------------------- bookmarks

STRAY_KEYS = ("currently_syncing", "bookmark", "lsn", "replication_key_value", "Version")


def bookmark_keys(table: Table, method: str, replication_key: str | None) -> tuple[dict[str, Key], dict[str, Key]]:
    """The keys of a bookmark of `method`: those always there, and those of an interrupted copy."""
    usual = {"version": VERSION, "last_replication_method": methods(method), "origin": ORIGIN}
    copying = {"resume_key": resume_keys(table), "snapshot_xmin": SNAPSHOT_XMIN}
    if method == "INCREMENTAL":
        key = replication_key or table.replication_keys[0]
        usual |= {
            "replication_key": replication_keys(table, key),
            "replication_key_value": replication_key_values(table, key),
        }
        copying = {}
    elif method == "LOG_BASED":
        usual["lsn"] = LSN
        copying |= {"copy_snapshot": COPY_SNAPSHOT}
    copying["xmin"] = SNAPSHOT_XMIN  # pipelinewise's interrupted-copy marker
    return usual, copying


def bookmarks_for(table: Table, method: str, replication_key: str | None) -> st.SearchStrategy:
    """A stream's bookmark object for `method`.

    Mostly a bookmark the tap could have written with one or two things changed: a key's value
    made hostile, a key removed, a stray key added. Now and then every key is drawn good or
    hostile on its own.
    """
    usual, copying = bookmark_keys(table, method, replication_key)
    keys = usual | copying
    written = st.tuples(
        st.fixed_dictionaries({name: key.good for name, key in usual.items()}),
        st.fixed_dictionaries({}, optional={name: key.good for name, key in copying.items()}),
    ).map(lambda parts: parts[0] | parts[1])
    change = st.one_of(
        st.sampled_from(sorted(keys)).flatmap(lambda name: st.tuples(st.just(name), keys[name].hostile)),
        st.tuples(st.sampled_from(sorted(keys)), st.just(ABSENT)),
        st.tuples(st.sampled_from(STRAY_KEYS), junk),
    )
    edited = st.tuples(written, st.lists(change, max_size=2)).map(lambda parts: edit(*parts))
    wild = st.tuples(
        st.fixed_dictionaries({}, optional={name: key.any() for name, key in keys.items()}),
        st.dictionaries(st.sampled_from(STRAY_KEYS), junk, max_size=2),
    ).map(lambda parts: parts[1] | parts[0])
    return weighted((3, edited), (1, wild))


def edit(bookmark: dict, changes: list[tuple[str, Any]]) -> dict:
    """The bookmark with each (key, value) of `changes` set, or removed where the value is ABSENT."""
    bookmark = dict(bookmark)
    for name, value in changes:
        if value is ABSENT:
            bookmark.pop(name, None)
        else:
            bookmark[name] = value
    return bookmark


def states(selected: dict[str, tuple[str, str | None]]) -> st.SearchStrategy:
    """A state for the selected streams ({stream id: (method, replication key)}): maybe wrapped, maybe hostile.

    `currently_syncing` names a selected stream, an unknown one, or is not a stream id at all;
    bookmarks of streams not in the catalog come along.
    """
    per_stream = {
        # now and then none, or no object at all (the malformed-state test sends those more often)
        stream: weighted((16, bookmarks_for(TABLES[stream], method, key)), (1, st.just(ABSENT)), (1, junk))
        for stream, (method, key) in sorted(selected.items())
    }
    # streams not synced in this run keep whatever bookmark they have, usually one the tap wrote
    others = {
        stream: bookmarks_for(TABLES.get(stream, TABLES["public-int_keyed"]), method, None)
        for stream in [*UNKNOWN_STREAMS, *sorted(set(TABLES) - set(selected))]
        for method in [METHODS[len(stream) % 3]]
    }
    bookmarks = st.tuples(
        st.fixed_dictionaries(per_stream).map(lambda drawn: {k: v for k, v in drawn.items() if v is not ABSENT}),
        st.just({}) | st.fixed_dictionaries({}, optional=others),
    ).map(lambda parts: parts[1] | parts[0])
    currently_syncing = weighted((12, st.sampled_from([None, *sorted(selected), *UNKNOWN_STREAMS])), (1, junk))
    value = st.fixed_dictionaries({"bookmarks": bookmarks}, optional={"currently_syncing": currently_syncing})
    value |= st.tuples(value, st.dictionaries(st.sampled_from(["singer_state", "bookmark", "lsn"]), junk)).map(
        lambda parts: parts[1] | parts[0]
    )
    return weighted((3, value), (1, value.map(lambda state: {"type": "STATE", "value": state})))


malformed_states = st.one_of(
    junk.filter(lambda value: not isinstance(value, dict)),
    st.fixed_dictionaries({"bookmarks": junk.filter(lambda value: value != {})}),
    st.fixed_dictionaries({"bookmarks": st.dictionaries(st.sampled_from(sorted(TABLES)), junk, min_size=1)}),
    st.fixed_dictionaries({"bookmarks": st.just({}), "currently_syncing": junk}),
    st.builds(lambda value: {"type": "STATE", "value": value}, junk),
    st.builds(lambda value: {"type": value, "value": {"bookmarks": {}}}, junk),
)
"""States whose shape is wrong: not an object, bookmarks that are no map of objects, odd wrappers."""

malformed_files = st.sampled_from(["", " ", "{", '{"bookmarks": }', "[1,", "\ufeff{}", "null null", "{}{}", "nan"])
"""State files that are not JSON at all."""
