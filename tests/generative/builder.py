"""Builds one example's table in its own schema, applies its DML, and reads rows back through the oracle."""

from __future__ import annotations

import dataclasses

from generative.matchers import ORACLE_SETTINGS, expected_value, oracle_select
from generative.script import Script, ident, string, typed
from generative.strategies import Column, Op, Table


@dataclasses.dataclass
class Row:
    """A row as the oracle read it: where it is, and each column's output text (text lists for arrays)."""

    place: tuple[str, str]  # (partition as regclass text, ctid)
    keys: list[str]  # the key columns' output texts (whole arrays), to name the row in a WHERE
    texts: list

    def expected(self, columns: list[Column]) -> list:
        return [expected_value(column, text) for column, text in zip(columns, self.texts, strict=True)]


@dataclasses.dataclass
class Change:
    """One change the DML made, as the LOG_BASED stream should report it."""

    deleted: bool
    row: Row


class Example:
    """One example: a schema of its own holding the types and the table, and the script that made them."""

    def __init__(self, conn, table: Table):
        self.table = table
        self.schema = table.schema
        self.script = Script(conn.cursor())
        self.qualified = f"{ident(self.schema)}.{ident(table.name)}"
        self.partitioned_leaves: list[str] = []

    @property
    def columns(self) -> list[Column]:
        return self.table.columns

    @property
    def stream(self) -> str:
        return f"{self.schema}-{self.table.name}"

    def build(self) -> None:
        """Create the schema, the types, the table (and its partitions), then insert the rows."""
        table, run = self.table, self.script.run
        # the tap's session settings: the oracle reads output texts as the tap's sessions print them;
        # synchronous commits: the test cluster runs with synchronous_commit off, and a LOG_BASED run
        # stops at pg_current_wal_lsn(), which a just-committed change may not have reached yet
        run(f"SET {ORACLE_SETTINGS}; SET synchronous_commit = on")
        run(f"CREATE SCHEMA {ident(self.schema)}")
        run(f"SET search_path TO {ident(self.schema)}, public")
        for statement in table.ddl:
            run(statement)
        columns = [
            f"{ident(c.name)} {c.type.sql}"
            + (f" GENERATED ALWAYS AS ({c.generation}) STORED" if c.generation else "")
            + (" NOT NULL" if c.not_null and not c.type.not_null else "")
            for c in table.columns
        ]
        if table.primary_key:
            columns.append(f"PRIMARY KEY ({', '.join(ident(c.name) for c in table.key_columns())})")
        statement = f"CREATE TABLE {ident(table.name)} ({', '.join(columns)})"
        if table.partitioning:
            method, column = table.partitioning.method, table.columns[table.partitioning.column]
            run(f"{statement} PARTITION BY {method} ({ident(column.name)})")
            self._partitions()
        else:
            run(statement)
            self.partitioned_leaves = [ident(table.name)]
        if table.replica_identity == "FULL":
            for leaf in self.partitioned_leaves:
                run(f"ALTER TABLE {leaf} REPLICA IDENTITY FULL")
        for values in table.rows:
            run(self._insert(values))

    def _insert(self, values: list[str]) -> str:
        conflict = " ON CONFLICT DO NOTHING" if self.table.primary_key else ""
        return f"INSERT INTO {ident(self.table.name)} VALUES ({', '.join(values)}){conflict}"

    def _distinct_texts(self, column_index: int) -> list[str]:
        """The distinct non-NULL values the rows give a column, sorted by the column's type, as output text."""
        literals = [values[column_index] for values in self.table.rows if values[column_index] != "NULL"]
        if not literals:
            return []
        column = self.table.columns[column_index]
        rows = ", ".join(f"(({literal})::{column.type.comparable_sql})" for literal in literals)
        return [
            text
            for (text,) in self.script.run(
                f"SELECT format('%s', y.v) FROM (SELECT DISTINCT x.v FROM (VALUES {rows}) AS x(v) "
                "WHERE x.v IS NOT NULL) AS y ORDER BY y.v",
                show=False,
            )
        ]

    def _partitions(self) -> None:
        """RANGE or LIST partitions cut at the rows' own values, a DEFAULT one for the rest, maybe a sub-level."""
        table, spec, run = self.table, self.table.partitioning, self.script.run
        column = table.columns[spec.column]
        values = [typed(text, column.type.sql) for text in self._distinct_texts(spec.column)]
        bounds = []
        if spec.method == "RANGE":
            cuts = ["MINVALUE", *values[: spec.partitions - 1], "MAXVALUE"]
            bounds = [f"FROM ({low}) TO ({high})" for low, high in zip(cuts, cuts[1:], strict=False)]
        else:
            groups = [values[index :: spec.partitions] for index in range(spec.partitions)]
            bounds = [f"IN ({', '.join(group)})" for group in groups if group]
        for index, bound in enumerate(bounds):
            name = ident(f"{table.name} p{index}")
            sub_level = spec.sub_column is not None and index == len(bounds) - 1
            if sub_level:
                sub = table.columns[spec.sub_column]
                run(f"CREATE TABLE {name} PARTITION OF {ident(table.name)} FOR VALUES {bound} "
                    f"PARTITION BY LIST ({ident(sub.name)})")  # fmt: skip
                sub_values = [typed(text, sub.type.sql) for text in self._distinct_texts(spec.sub_column)]
                if sub_values:
                    leaf = ident(f"{table.name} p{index} s")
                    run(f"CREATE TABLE {leaf} PARTITION OF {name} FOR VALUES IN ({sub_values[0]})")
                    self.partitioned_leaves.append(leaf)
                leaf = ident(f"{table.name} p{index} d")
                run(f"CREATE TABLE {leaf} PARTITION OF {name} DEFAULT")
                self.partitioned_leaves.append(leaf)
            else:
                run(f"CREATE TABLE {name} PARTITION OF {ident(table.name)} FOR VALUES {bound}")
                self.partitioned_leaves.append(name)
        leaf = ident(f"{table.name} default")
        run(f"CREATE TABLE {leaf} PARTITION OF {ident(table.name)} DEFAULT")
        self.partitioned_leaves.append(leaf)

    def _row_items(self) -> str:
        keys = "".join(f"format('%s', src.{ident(c.name)}), " for c in self.table.key_columns())
        return f"src.tableoid::regclass::text, src.ctid::text, {keys}{oracle_select(self.columns)}"

    def _rows(self, rows: list[tuple]) -> list[Row]:
        count = len(self.table.primary_key)
        return [Row((row[0], row[1]), list(row[2 : 2 + count]), list(row[2 + count :])) for row in rows]

    def snapshot(self) -> list[Row]:
        """Read every row through the oracle (not part of the script)."""
        return self._rows(self.script.run(f"SELECT {self._row_items()} FROM {self.qualified} AS src", show=False))

    def drop(self) -> None:
        self.script.run(f"DROP SCHEMA IF EXISTS {ident(self.schema)} CASCADE", show=False)
        self.script.run("SET search_path TO DEFAULT", show=False)

    # -------------------------------------------------------------------------------- DML

    def _where(self, row: Row) -> str:
        """A WHERE clause naming exactly this row: its key, else its partition and ctid."""
        keys = self.table.key_columns()
        if keys:
            return " AND ".join(
                f"src.{ident(c.name)}::{c.type.comparable_sql} = {typed(text, c.type.comparable_sql)}"
                for c, text in zip(keys, row.keys, strict=True)
            )
        return f"src.tableoid = {string(row.place[0])}::regclass AND src.ctid = {string(row.place[1])}::tid"

    def _returning(self) -> str:
        return f"RETURNING {self._row_items()}"

    def apply(self, plan: list[Op], rows: list[Row]) -> list[Change]:
        """Run the plan's changes (those this table allows) and return what each did, in commit order.

        Each existing row is touched at most once, and inserted rows never again, so every change
        leaves a row in its final state: FULL_TABLE after the changes holds each change's row.
        Tables without a key and without REPLICA IDENTITY FULL only take inserts (their updates and
        deletes cannot be identified, as the README says); partition and key columns keep their values
        but for `rekey`, which gives a row of an unpartitioned keyed table a new key.
        """
        table, changes = self.table, []
        untouched = list(rows)
        fixed = set(table.primary_key) | {index for index, c in enumerate(self.columns) if c.generation}
        if table.partitioning:
            fixed |= {table.partitioning.column, table.partitioning.sub_column} - {None}
        target_table = f"{ident(table.name)} AS src"
        for op in plan:
            if op.kind == "insert":
                conflict = " ON CONFLICT DO NOTHING" if table.primary_key else ""
                returned = self._returned(
                    f"INSERT INTO {target_table} VALUES ({', '.join(op.values)}){conflict} {self._returning()}"
                )
                changes += [Change(False, row) for row in returned]
                continue
            if not untouched or (not table.primary_key and table.replica_identity != "FULL"):
                continue
            target = untouched.pop(op.target % len(untouched))
            if op.kind == "delete":
                returned = self._returned(f"DELETE FROM {target_table} WHERE {self._where(target)} {self._returning()}")
                changes += [Change(True, row) for row in returned]
            elif op.kind == "update":
                settable = [index for index in range(len(self.columns)) if index not in fixed]
                chosen = sorted({settable[i % len(settable)] for i in op.columns or [0]}) if settable else []
                if not chosen:
                    continue
                assignments = ", ".join(f"{ident(self.columns[i].name)} = {op.values[i]}" for i in chosen)
                returned = self._returned(
                    f"UPDATE {target_table} SET {assignments} WHERE {self._where(target)} {self._returning()}"
                )
                changes += [Change(False, row) for row in returned]
            elif op.kind == "rekey" and table.primary_key and not table.partitioning:
                keys = table.key_columns()
                assignments = ", ".join(f"{ident(self.columns[i].name)} = {op.values[i]}" for i in table.primary_key)
                new_key = " AND ".join(
                    f"other.{ident(c.name)}::{c.type.comparable_sql} = ({op.values[i]})::{c.type.comparable_sql}"
                    for c, i in zip(keys, table.primary_key, strict=True)
                )
                returned = self._returned(
                    f"UPDATE {target_table} SET {assignments} WHERE {self._where(target)} AND NOT EXISTS "
                    f"(SELECT FROM {ident(table.name)} AS other WHERE {new_key}) {self._returning()}"
                )
                for row in returned:
                    # the key change is a delete of the old key, then the row under its new key
                    changes += [Change(True, target), Change(False, row)]
        return changes

    def _returned(self, statement: str) -> list[Row]:
        return self._rows(self.script.run(statement))

    def rows_with_greatest(self, column_name: str) -> list[Row]:
        """The rows whose value of the column is the greatest (NULLs aside), by the column type's ordering."""
        column = next(c for c in self.columns if c.name == column_name)
        value = f"{ident(column_name)}::{column.type.comparable_sql}"
        return self._rows(
            self.script.run(
                f"SELECT {self._row_items()} FROM {self.qualified} AS src WHERE src.{value} = "
                f"(SELECT o.{value} FROM {self.qualified} AS o ORDER BY o.{value} DESC NULLS LAST LIMIT 1)",
                show=False,
            )
        )
