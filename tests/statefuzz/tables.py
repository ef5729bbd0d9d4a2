"""The fixed tables every fuzzed STATE is synced against, and what their rows look like as records.

Small on purpose: the fuzzer varies the STATE, not the data. Each table stands for a kind of key
a bookmark has to be bound back to: an integer, text that looks like a format string or holds
quotes, a timestamp, a composite key; `log_events` is the LOG_BASED table and grows by one row per
LOG_BASED example, so the WAL pass has changes to emit.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

SCHEMA = "public"

SETUP_SQL = r"""
CREATE TABLE int_keyed (id int PRIMARY KEY, name text NOT NULL, updated_at timestamp, amount numeric(10, 2));
INSERT INTO int_keyed VALUES
    (-5, 'minus five', '2019-12-31 23:59:59.999999', -1.50),
    (1, 'one', '2020-01-01 00:00:00', 10.00),
    (2, 'two', NULL, NULL),
    (3, 'three', '2020-02-29 12:34:56.789', 0.01),
    (10, 'ten', '2021-06-15 08:00:00', 99999999.99),
    (2147483647, 'max', '2038-01-19 03:14:07', 1);

CREATE TABLE text_keyed (code text PRIMARY KEY, note text);
INSERT INTO text_keyed VALUES
    ('10% off', 'a percent sign'), ('50%% done', 'two percent signs'), ('{x}', 'braces'), ('{}', 'empty braces'),
    ('%s', 'a format placeholder'), ('%(name)s', 'a named placeholder'), ('it''s', 'a single quote'),
    ('"quoted"', 'double quotes'), ('back\slash', 'a backslash'), ('a,b', 'a comma'), ('(1,2)', 'a row literal'),
    ('', 'the empty string'), (' ', 'a space'), ('ünïcødé', 'non-ASCII'), ('NULL', 'the word NULL');

CREATE TABLE ts_keyed (ts timestamp PRIMARY KEY, v int);
INSERT INTO ts_keyed VALUES
    ('1999-12-31 23:59:59.999999', 1), ('2020-01-01 00:00:00', 2), ('2020-02-29 12:34:56.5', 3),
    ('2024-01-01 00:00:00.000001', 4), ('2099-12-31 00:00:00', 5);

CREATE TABLE composite_keyed (region text, n int, label text, PRIMARY KEY (region, n));
INSERT INTO composite_keyed VALUES
    ('eu', 1, 'eu one'), ('eu', 2, 'eu two'), ('us', 1, 'us one'), ('us%', 3, 'percent region'),
    ('{a}', -7, 'braced region');

CREATE TABLE log_events (id int PRIMARY KEY, v text);
INSERT INTO log_events SELECT g, 'event ' || g FROM generate_series(1, 5) g;
"""


@dataclasses.dataclass(frozen=True)
class Table:
    """One fixed table: its columns (name, kind), primary key and the keys INCREMENTAL may use."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, kind): kind is int, text, timestamp or numeric
    primary_key: tuple[str, ...]
    replication_keys: tuple[str, ...]

    @property
    def stream(self) -> str:
        return f"{SCHEMA}-{self.name}"

    def kind_of(self, column: str) -> str:
        return dict(self.columns)[column]


TABLES = {
    table.stream: table
    for table in (
        Table(
            "int_keyed",
            (("id", "int"), ("name", "text"), ("updated_at", "timestamp"), ("amount", "numeric")),
            ("id",),
            ("id", "updated_at", "name"),
        ),
        Table("text_keyed", (("code", "text"), ("note", "text")), ("code",), ("code",)),
        Table("ts_keyed", (("ts", "timestamp"), ("v", "int")), ("ts",), ("ts", "v")),
        Table(
            "composite_keyed", (("region", "text"), ("n", "int"), ("label", "text")), ("region", "n"), ("n", "region")
        ),
        Table("log_events", (("id", "int"), ("v", "text")), ("id",), ("id",)),
    )
}
LOG_BASED_STREAMS = ("public-log_events", "public-int_keyed")
CAST = {"int": "int", "text": "text", "timestamp": "timestamp", "numeric": "numeric(10, 2)"}

# the tap's session settings (README): timestamps print as ISO text in UTC
SESSION_SQL = "SET TimeZone = 'UTC'; SET DateStyle = ISO"


def as_record_value(kind: str, text: str | None):
    """The JSON value the tap emits for a value of `kind` whose PostgreSQL text is `text` (README "Types")."""
    if text is None:
        return None
    if kind == "int":
        return int(text)
    if kind == "numeric":
        return Decimal(text)
    if kind == "timestamp":
        return text.replace(" ", "T", 1) + "+00:00"
    return text


def rows_of(conn, table: Table) -> dict[tuple, dict]:
    """Every row of the table as the record the tap should emit for it, by primary key."""
    columns = ", ".join(f"{name}::text" for name, _ in table.columns)
    with conn.cursor() as cur:
        cur.execute(SESSION_SQL)
        cur.execute(f"SELECT {columns} FROM {SCHEMA}.{table.name}")
        rows = {}
        for values in cur.fetchall():
            record = {
                name: as_record_value(kind, text) for (name, kind), text in zip(table.columns, values, strict=True)
            }
            rows[tuple(record[name] for name in table.primary_key)] = record
        cur.execute("RESET TimeZone; RESET DateStyle")
    return rows
