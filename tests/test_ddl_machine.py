"""LOG_BASED through schema changes: a hypothesis state machine interleaves DML and DDL on one table
between runs of tap | target, and after every completed run the target's table equals the source's.

The rules the tap follows (issue 19, README "Schema changes during LOG_BASED"):
- a catalog column the table no longer has (dropped or renamed) or a renamed table stops the run with
  one line saying "rerun --discover"; the machine rediscovers (selecting everything again) and reruns;
- a column retyped to a type the tap cannot emit stops the run with one line naming it and saying
  "deselect"; the machine deselects it in the catalog and reruns;
- anything else completes, and the target then holds the source's rows on every column the catalog
  selects (a renamed column, or one added with values the WAL never carried, makes the tap copy the
  stream again);
- no run prints a traceback.

`make test` runs one short derandomized example per variant; `make ddl` (TAP_DDL_EXAMPLES, TAP_DDL_STEPS,
TAP_DDL_SEED) runs many long ones.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest
from conftest import select_all
from generative.fuzzing import quiet_settings
from hypothesis import seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from psycopg2 import sql
from targets.compare import compare_table
from targets.pipeline import Pipeline, target_config

EXAMPLES = int(os.environ.get("TAP_DDL_EXAMPLES") or 0)
STEPS = int(os.environ.get("TAP_DDL_STEPS") or (25 if EXAMPLES else 5))
SEED = int(os.environ["TAP_DDL_SEED"]) if os.environ.get("TAP_DDL_SEED") else None
if EXAMPLES and SEED is None:
    SEED = random.randrange(2**32)
RUN_TIMEOUT = 120
LOG_BASED_CONFIG = {"logical_poll_total_seconds": 2, "break_at_end_lsn": True}
FIRST_ROWS = 12

# A column's kind -> the SQL of a value for row number {g}; None: the server writes it (identity, generated)
VALUES = {
    "int": "mod({g}, 1000)",
    "bigint": "(({g})::bigint * 1000003)",
    "numeric52": "round(mod({g}, 997) * 0.37, 2)",
    "numeric103": "(mod({g}, 9973) * 0.123)",
    "text": "('t' || ({g}) || ' ' || md5(({g})::text))",
    "varchar": "('v' || ({g}) || ' ' || md5(({g})::text))",
    # 3200 characters of md5 hex: pglz cannot shrink them, and STORAGE EXTERNAL keeps them out of line
    "bigtext": "(SELECT string_agg(md5(({g})::text || i), '') FROM generate_series(1, 100) i)",
    "unsupported": "'pg_class'::regclass",
    "identity": None,
    "generated": None,
}
# kind -> (the type it is retyped to, the kind it becomes)
RETYPES = {
    "int": ("bigint", "bigint"),
    "numeric52": ("numeric(10,3)", "numeric103"),
    "text": ("varchar(64)", "varchar"),
}
ADDED_TYPES = {"int": "integer", "numeric52": "numeric(5,2)", "text": "text"}
DEFAULTS = {"int": "7", "numeric52": "1.25", "text": "'dflt'"}


@dataclasses.dataclass
class Column:
    """A source column as the machine knows it: its name and its kind (a key of VALUES)."""

    name: str
    kind: str


@dataclasses.dataclass
class Setup:
    """What one variant's machine runs with: the source, the target, the plugin and a work dir."""

    db: object
    target_conn: object
    target: str
    plugin: str
    workdir: Path

    @property
    def tag(self) -> str:
        """The variant's name, prefix of its tables and its target schema."""
        return f"ddl_{self.plugin}_{self.target}"


class DdlMachine(RuleBasedStateMachine):
    """One table with a primary key, changed by DML and DDL, read by LOG_BASED runs into a real target."""

    setup: Setup  # set on a subclass per variant (see _machine)
    examples = 0

    def __init__(self):
        super().__init__()
        type(self).examples += 1
        self.db = self.setup.db
        self.tap_config = dict(self.db.config, **LOG_BASED_CONFIG)
        self.target_config = target_config(
            self.setup.target, self.db.server, self.setup.target_conn.info.dbname, self.setup.tag
        )
        self.table = self.setup.tag
        self.columns = [
            Column("n", "int"),
            Column("amount", "numeric52"),
            Column("note", "text"),
            Column("big", "bigtext"),
        ]
        self.deselected: set[str] = set()
        self.next_id = FIRST_ROWS + 1
        self.salt = 0
        self.renames = 0
        self.runs = 0
        self.state: dict | None = None
        self._reset()
        self.catalog = self._discover()
        self._run()

    # -- the source ------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        """Drop the slot, the variant's tables and its target schema; create the table and the slot anew."""
        self.db.drop_slots()
        for (name,) in self.db.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND starts_with(tablename, %s)",
            (self.setup.tag,),
        ):
            self.db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        with self.setup.target_conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.setup.tag)))
        self._sql(
            "CREATE TABLE {t} (id integer PRIMARY KEY, n integer, amount numeric(5,2), note text, big text); "
            "ALTER TABLE {t} ALTER COLUMN big SET STORAGE EXTERNAL"
        )
        self._insert(1, FIRST_ROWS)
        self.db.create_slot()

    def _sql(self, statement: str, params=None, **identifiers: str) -> None:
        """Run a statement whose {t} is the current table and whose other fields are identifiers."""
        names = {key: sql.Identifier(value) for key, value in identifiers.items()}
        self.db.execute(sql.SQL(statement).format(t=sql.Identifier(self.table), **names), params)

    def _writable(self) -> list[Column]:
        return [column for column in self.columns if VALUES[column.kind] is not None]

    def _insert(self, first: int, last: int) -> None:
        columns = self._writable()
        names = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c.name)) for c in columns)
        values = "".join(", " + VALUES[c.kind].format(g="g") for c in columns)
        self.db.execute(
            sql.SQL("INSERT INTO {t} (id{names}) SELECT g{values} FROM generate_series(%s, %s) g").format(
                t=sql.Identifier(self.table), names=names, values=sql.SQL(values)
            ),
            (first, last),
        )

    def _update(self, columns: list[Column], residue: int) -> None:
        self.salt += 1
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), sql.SQL(VALUES[c.kind].format(g=f"id + {self.salt}")))
            for c in columns
        )
        self.db.execute(
            sql.SQL("UPDATE {t} SET {assignments} WHERE mod(id, 3) = %s").format(
                t=sql.Identifier(self.table), assignments=assignments
            ),
            (residue,),
        )

    def _pick(self, kinds, choice: int) -> Column:
        candidates = [column for column in self.columns if column.kind in kinds]
        return candidates[choice % len(candidates)]

    def _has(self, *kinds: str) -> bool:
        return any(column.kind in kinds for column in self.columns)

    def _new_name(self, stem: str) -> str:
        self.renames += 1
        return f"{stem}_{self.renames}"

    # -- DML -------------------------------------------------------------------------------------------------

    @rule(count=st.integers(1, 4))
    def insert_rows(self, count):
        self._insert(self.next_id, self.next_id + count - 1)
        self.next_id += count

    @precondition(lambda self: self._writable())
    @rule(mask=st.integers(1, 255), residue=st.integers(0, 2))
    def update_rows(self, mask, residue):
        writable = self._writable()
        chosen = [column for index, column in enumerate(writable) if mask >> (index % 8) & 1] or writable[:1]
        self._update(chosen, residue)

    @precondition(lambda self: self._has("bigtext") and any(c.kind != "bigtext" for c in self._writable()))
    @rule(residue=st.integers(0, 2))
    def update_leaving_large_values_unchanged(self, residue):
        """The TOASTed values stay as they are: pgoutput sends them as 'unchanged', wal2json leaves them out."""
        self._update([column for column in self._writable() if column.kind != "bigtext"], residue)

    @rule(offset=st.integers(0, 20))
    def delete_rows(self, offset):
        self._sql("DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id OFFSET %s LIMIT 2)", (offset,))

    @rule(offset=st.integers(0, 20))
    def change_a_key(self, offset):
        self._sql(
            "UPDATE {t} SET id = %s WHERE id = (SELECT id FROM {t} ORDER BY id OFFSET %s LIMIT 1)",
            (self.next_id, offset),
        )
        self.next_id += 1

    # -- DDL -------------------------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(ADDED_TYPES)), how=st.sampled_from(["plain", "default", "identity", "generated"]))
    def add_column(self, kind, how):
        name = self._new_name("c")
        if how == "identity":
            definition, kind = "bigint GENERATED BY DEFAULT AS IDENTITY", "identity"
        elif how == "generated":
            definition, kind = "integer GENERATED ALWAYS AS (id * 3) STORED", "generated"
        else:
            definition = ADDED_TYPES[kind] + (f" DEFAULT {DEFAULTS[kind]}" if how == "default" else "")
        self._sql(f"ALTER TABLE {{t}} ADD COLUMN {{c}} {definition}", c=name)
        self.columns.append(Column(name, kind))

    @precondition(lambda self: self.columns)
    @rule(choice=st.integers(0, 20))
    def drop_column(self, choice):
        column = self._pick(VALUES, choice)
        self._sql("ALTER TABLE {t} DROP COLUMN {c}", c=column.name)
        self.columns.remove(column)

    @precondition(lambda self: self.columns)
    @rule(choice=st.integers(0, 20))
    def rename_column(self, choice):
        column = self._pick(VALUES, choice)
        new_name = self._new_name(column.name.split("_")[0])
        self._sql("ALTER TABLE {t} RENAME COLUMN {c} TO {new}", c=column.name, new=new_name)
        column.name = new_name

    @precondition(lambda self: self._has(*RETYPES))
    @rule(choice=st.integers(0, 20))
    def retype_column(self, choice):
        column = self._pick(RETYPES, choice)
        new_type, column.kind = RETYPES[column.kind]
        self._sql(f"ALTER TABLE {{t}} ALTER COLUMN {{c}} TYPE {new_type}", c=column.name)

    @precondition(lambda self: self._has("int", "bigint"))
    @rule(choice=st.integers(0, 20))
    def retype_column_to_a_type_the_tap_cannot_emit(self, choice):
        column = self._pick(("int", "bigint"), choice)
        self._sql("ALTER TABLE {t} ALTER COLUMN {c} TYPE regclass USING 'pg_class'::regclass", c=column.name)
        column.kind = "unsupported"

    @rule()
    def rename_table(self):
        new_name = self._new_name(self.setup.tag)
        self._sql("ALTER TABLE {t} RENAME TO {new}", new=new_name)
        self.table = new_name

    # pipelinewise-target-postgres ignores ACTIVATE_VERSION, so the new table version a TRUNCATE becomes
    # cannot empty its table: the rule runs only into meltanolabs-target-postgres (hard_delete)
    @precondition(lambda self: self.setup.target == "meltanolabs")
    @rule()
    def truncate(self):
        self._sql("TRUNCATE {t}")

    # -- runs ------------------------------------------------------------------------------------------------

    @rule(discover=st.booleans())
    def run_pipeline(self, discover):
        if discover:
            self.catalog = self._discover()
        self._run()

    def _discover(self) -> dict:
        """Discover, select the table's stream (LOG_BASED, every column) and deselect what was deselected."""
        catalog = select_all(self.db.discover(self.tap_config), "LOG_BASED", only={f"public-{self.table}"})
        stream = self._stream(catalog)
        for item in stream["metadata"]:
            if item["breadcrumb"][-1:] and item["breadcrumb"][-1] in self.deselected:
                item["metadata"]["selected"] = False
        return catalog

    def _stream(self, catalog: dict) -> dict:
        """The catalog's one selected stream."""
        (stream,) = [s for s in catalog["streams"] if s["metadata"][0]["metadata"].get("selected")]
        return stream

    def _catalog_columns(self) -> dict[str, dict]:
        """The selected stream's columns the tap emits: name -> metadata."""
        columns = {}
        for item in self._stream(self.catalog)["metadata"]:
            if item["breadcrumb"][:1] != ["properties"]:
                continue
            md = item["metadata"]
            chosen = md.get("selected", md.get("selected-by-default", True))
            if md.get("inclusion") == "automatic" or (chosen and md.get("inclusion") != "unsupported"):
                columns[item["breadcrumb"][1]] = md
        return columns

    def _expected_stops(self) -> set[str]:
        """What the next run must stop for: 'rerun --discover', a column to deselect, or nothing (empty)."""
        if self._stream(self.catalog)["table_name"] != self.table:
            return {"rerun --discover"}
        kinds = {"id": "int", **{column.name: column.kind for column in self.columns}}
        stops = set()
        for name in self._catalog_columns():
            if name not in kinds:
                stops.add("rerun --discover")
            elif kinds[name] == "unsupported":
                stops.add(name)
        return stops

    def _run(self) -> None:
        """Run tap | target from the last saved STATE; on an expected stop, do what its line says and rerun."""
        for _ in range(4):
            expected = self._expected_stops()
            self.runs += 1
            pipeline = Pipeline(
                self.setup.workdir / f"run{self.examples}-{self.runs}",
                self.setup.target,
                self.tap_config,
                self.catalog,
                self.state,
                self.target_config,
            )
            codes = pipeline.wait(RUN_TIMEOUT)
            self.state = pipeline.last_state or self.state
            log = pipeline.tap_log.read_text(errors="replace")
            assert "Traceback" not in log, pipeline.describe(tail=60)
            errors = [line for line in log.splitlines() if line.startswith("tap-postgres: error:")]
            if codes == (0, 0):
                assert not expected, f"the run should have stopped for {expected}\n{pipeline.describe()}"
                self._assert_target_equals_source()
                return
            assert codes[0] == 1 and len(errors) == 1, f"not one line of error\n{pipeline.describe()}"
            (line,) = errors
            if "rerun --discover" in line and "rerun --discover" in expected:
                self.catalog = self._discover()
            elif "deselect" in line and any(f'"{name}"' in line for name in expected - {"rerun --discover"}):
                (name,) = [name for name in expected if f'"{name}"' in line]
                self.deselected.add(name)
                self.catalog = self._discover()
            else:
                raise AssertionError(f"expected a stop for {expected or 'nothing'}, got: {line}\n{pipeline.describe()}")
        raise AssertionError("four runs in a row stopped")

    def teardown(self):
        """Every example ends with a run, so the changes after its last run are checked too."""
        self._run()

    def _assert_target_equals_source(self) -> None:
        diff = compare_table(
            self.db.conn,
            "public",
            self.table,
            self.setup.target_conn,
            self.setup.tag,
            self.setup.target,
            ["id"],
            only_columns=set(self._catalog_columns()),
        )
        assert not diff, f"target {self.setup.target} differs from the source {self.table}:\n{diff.report()}"


def _machine(setup: Setup) -> type[DdlMachine]:
    """The machine of one variant, seeded under make ddl."""
    machine = type("DdlMachine", (DdlMachine,), {"setup": setup, "examples": 0})
    return seed(SEED)(machine) if SEED is not None else machine


VARIANTS = [
    pytest.param("wal2json", "pipelinewise", marks=pytest.mark.wal2json),
    pytest.param("wal2json", "meltanolabs", marks=pytest.mark.wal2json),
    pytest.param("pgoutput", "pipelinewise"),
    pytest.param("pgoutput", "meltanolabs"),
]


@pytest.mark.parametrize(("plugin", "target"), VARIANTS)
def test_target_equals_the_source_through_schema_changes(db, target_conn, tmp_path, plugin, target):
    db.execute("SET synchronous_commit = on")  # a run started right after a commit must find it in the WAL
    db.plugin = plugin
    if SEED is not None:
        print(f"TAP_DDL_SEED={SEED}")  # shown with a failure, to replay it
    try:
        machine = _machine(Setup(db, target_conn, target, plugin, tmp_path))
        configured = quiet_settings(EXAMPLES or 1, derandomize=SEED is None, stateful_step_count=STEPS)
        run_state_machine_as_test(machine, settings=configured)
    finally:
        db.plugin = db.default_plugin
        db.drop_slots()
