"""Discovery: read tables, columns, keys and types from pg_catalog and build Singer catalog entries.

The number of queries is constant (five), however many tables the database holds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict

from tap_postgres import filters, types
from tap_postgres.config import Config
from tap_postgres.filters import KEEP_ALL, Filters
from tap_postgres.metadata import streams as metadata_streams

LOGGER = logging.getLogger("tap-postgres")

RELATION_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
VIEW_KINDS = {"v", "m"}

# row-count: reltuples once ANALYZE or VACUUM has counted the table; before (reltuples -1 on
# PostgreSQL 14+, 0 with no pages before), an estimate from its size as PeerDB makes it: pages on
# disk times the rows per page, known from reltuples/relpages when counted, else from the row
# width, (block size - 24 bytes of page header) / (24 bytes of tuple header + the columns' widths,
# 32 bytes for each of variable width as the planner guesses). A partitioned table is the sum of
# its leaf partitions' (any depth), which it has no statistics of its own for before ANALYZE.
_ROW_ESTIMATE_SQL = """
CASE WHEN {c}.reltuples >= 0 AND {c}.relpages > 0 THEN {c}.reltuples
     ELSE pg_relation_size({c}.oid) / current_setting('block_size')::numeric
          * CASE WHEN {c}.reltuples > 0 AND {c}.relpages > 0 THEN {c}.reltuples / {c}.relpages
                 ELSE (current_setting('block_size')::numeric - 24) / (24 + (
                      SELECT coalesce(sum(CASE WHEN a.attlen > 0 THEN a.attlen ELSE 32 END), 0)
                        FROM pg_attribute a
                       WHERE a.attrelid = {c}.oid AND a.attnum > 0 AND NOT a.attisdropped)) END END
"""

_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       round(CASE WHEN c.relkind = 'p' THEN (
           SELECT coalesce(sum({leaf}), 0)
             FROM pg_partition_tree(c.oid) AS tree
             JOIN pg_class leaf ON leaf.oid = tree.relid
            WHERE tree.isleaf)
       WHEN c.relkind IN ('r', 'm') THEN {table} ELSE greatest(c.reltuples, 0) END)::bigint,
       obj_description(c.oid, 'pg_class'), c.relispopulated,
       has_schema_privilege(n.oid, 'USAGE'), has_any_column_privilege(c.oid, 'SELECT')
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND {schemas}
   AND (%(tables)s::text[] IS NULL OR (n.nspname || '.' || c.relname) = ANY(%(tables)s::text[]))
   AND (%(partitions)s OR NOT c.relispartition)
   {relations}
 ORDER BY n.nspname, c.relname
""".format(
    leaf=_ROW_ESTIMATE_SQL.format(c="leaf"),
    table=_ROW_ESTIMATE_SQL.format(c="c"),
    schemas=filters.schema_conditions("n"),
    relations=filters.relation_conditions("n", "c"),
)

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attnotnull, a.atttypid, a.atttypmod,
       format_type(a.atttypid, NULL), tn.nspname, t.typname, col_description(a.attrelid, a.attnum),
       has_column_privilege(a.attrelid, a.attnum, 'SELECT'),
       a.attgenerated, pg_get_expr(d.adbin, d.adrelid), format_type(a.atttypid, a.atttypmod),
       CASE WHEN d.oid IS NOT NULL THEN ARRAY(
           SELECT input.attname
             FROM pg_depend dep
             JOIN pg_attribute input ON input.attrelid = dep.refobjid AND input.attnum = dep.refobjsubid
            -- 15 on: the expression (pg_attrdef) depends on its inputs; 13 and 14: the column itself does
            WHERE (dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                   OR dep.classid = 'pg_class'::regclass AND dep.objid = a.attrelid AND dep.objsubid = a.attnum)
              AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
              AND dep.refobjsubid > 0 AND dep.refobjsubid <> a.attnum
            GROUP BY input.attnum, input.attname
            ORDER BY input.attnum) END,
       a.attnum, a.atthasdef OR a.atthasmissing OR a.attidentity <> '' OR a.attgenerated <> ''
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
  -- a generated column's expression (the default of any other column is not needed)
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.attgenerated <> ''
 WHERE a.attrelid = ANY(%(oids)s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum
"""

# The columns' types and every type they are built on (a domain's base, an array's element, a
# domain over an array over a domain ...), followed to the bottom. A domain's value is cast to its
# base type by (schema, typname), without a modifier: `bpchar` and `bit` without one have no length,
# where `character` or `bit` written by format_type would mean a length of one.
_TYPES_SQL = """
WITH RECURSIVE needed(oid) AS (
    SELECT unnest(%(oids)s::oid[])
    UNION
    SELECT part.oid
      FROM needed
      JOIN pg_type t ON t.oid = needed.oid
     CROSS JOIN LATERAL (VALUES (t.typbasetype), (t.typelem)) AS part(oid)
     WHERE part.oid <> 0
)
SELECT t.oid, t.typname, t.typtype, t.typcategory, t.typelem, t.typbasetype, t.typtypmod, n.nspname
  FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.oid IN (SELECT oid FROM needed)
"""

_PRIMARY_KEYS_SQL = """
SELECT i.indrelid, array_agg(a.attname ORDER BY k.position)
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indisprimary AND i.indrelid = ANY(%(oids)s::oid[])
 GROUP BY i.indrelid
"""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a column sits in its table and what it held when added: how LOG_BASED tells schema changes apart.

    A rename keeps the column's number; a column added with a default, an identity or a
    generation expression gave the rows already there values the WAL never carried.
    """

    number: int  # pg_attribute.attnum: never reused, kept by a rename
    type_text: str  # format_type with its modifier: numeric(10,3), character varying(20)
    filled_when_added: bool  # a default, a missing value, an identity or an expression


@dataclasses.dataclass(frozen=True)
class Generation:
    """How the server makes a generated column's value: an expression over the row's other columns."""

    kind: str  # pg_attribute.attgenerated: s(tored), or v(irtual) from PostgreSQL 18
    # pg_get_expr's text, whose names resolve under the session's search_path as they did when it was read
    expression: str
    type_sql: str  # the column's type with its modifier, which the value is cast to as it is when stored
    inputs: tuple[str, ...]  # the columns the expression reads


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a table as pg_catalog describes it."""

    name: str
    sql_datatype: str  # format_type without modifier, as pipelinewise reports it (never put into SQL)
    # the column's own type as (schema, typname): a bound value is cast to it, without a modifier,
    # which a value read from the table never needs
    type_name: tuple[str, str]
    type: types.ColumnType | None  # None when the type is not one the tap knows
    not_null: bool
    description: str | None
    selectable: bool
    generation: Generation | None = None  # None unless a generated column
    placement: Placement | None = None  # None for a column that is not a table's (a stand-in)


@dataclasses.dataclass(frozen=True)
class Table:
    """One table, view, materialized view, partitioned or foreign table."""

    schema_name: str
    name: str
    kind: str  # pg_class.relkind
    row_count: int
    description: str | None
    columns: list[Column]
    primary_key: list[str]
    populated: bool = True  # false for a materialized view created WITH NO DATA and not refreshed since
    schema_usable: bool = True  # the user has USAGE on the schema, without which no name in it resolves
    selectable: bool = True  # the user has SELECT on the table or on one of its columns at least

    @property
    def is_view(self) -> bool:
        """Tell whether rows come from a query rather than storage (no key, no WAL)."""
        return self.kind in VIEW_KINDS

    @property
    def qualified_name(self) -> str:
        """The table as SQL names it, `"schema"."table"`, for messages."""
        return f"{quote_ident(self.schema_name)}.{quote_ident(self.name)}"

    @property
    def tap_stream_id(self) -> str:
        """The pipelinewise stream id, `<schema>-<table>`."""
        return stream_id(self.schema_name, self.name)


def stream_id(schema_name: str, table_name: str) -> str:
    """Return the pipelinewise stream id of a table."""
    return f"{schema_name}-{table_name}"


def describe_tables(
    conn,
    *,
    kept: Filters = KEEP_ALL,
    tables: list[tuple[str, str]] | None = None,
    include_partitions: bool = False,
) -> list[Table]:
    """Read the tables discovery keeps (or the given `(schema, table)` pairs) from pg_catalog."""
    with conn.cursor() as cur:
        cur.execute(
            _TABLES_SQL,
            {
                **kept.params(),
                "tables": [f"{schema}.{table}" for schema, table in tables] if tables else None,
                "partitions": include_partitions or bool(tables),
            },
        )
        table_rows = cur.fetchall()
        oids = [row[0] for row in table_rows]
        cur.execute(_COLUMNS_SQL, {"oids": oids})
        column_rows = cur.fetchall()
        cur.execute(_TYPES_SQL, {"oids": sorted({row[3] for row in column_rows})})
        type_rows = {row[0]: row for row in cur.fetchall()}
        cur.execute(_PRIMARY_KEYS_SQL, {"oids": oids})
        primary_keys = dict(cur.fetchall())
    conn.rollback()

    columns_by_table: dict[int, list[Column]] = defaultdict(list)
    for (
        relid,
        name,
        not_null,
        type_oid,
        typmod,
        sql_datatype,
        type_schema,
        typname,
        description,
        selectable,
        generated,
        expression,
        type_sql,
        inputs,
        number,
        filled_when_added,
    ) in column_rows:
        column_type = resolve_type(type_rows, type_oid, typmod)
        generation = Generation(generated, expression, type_sql, tuple(inputs)) if expression else None
        columns_by_table[relid].append(
            Column(
                name,
                sql_datatype,
                (type_schema, typname),
                column_type,
                not_null,
                description,
                selectable,
                generation,
                Placement(number, type_sql, filled_when_added),
            )
        )

    return [
        Table(
            schema_name=schema_name,
            name=name,
            kind=kind,
            row_count=row_count,
            description=description,
            columns=columns_by_table[oid],
            primary_key=list(primary_keys.get(oid, [])),
            populated=populated,
            schema_usable=schema_usable,
            selectable=selectable,
        )
        for oid, schema_name, name, kind, row_count, description, populated, schema_usable, selectable in table_rows
    ]


def readable_tables(tables: list[Table], user: str) -> list[Table]:
    """Return the tables the user can read, warning once about each schema and table left out."""
    unusable = sorted({table.schema_name for table in tables if not table.schema_usable})
    for schema_name in unusable:
        LOGGER.warning(
            "Skipping schema %s: user %s lacks USAGE on it (GRANT USAGE ON SCHEMA %s TO %s to discover it)",
            quote_ident(schema_name),
            quote_ident(user),
            quote_ident(schema_name),
            quote_ident(user),
        )
    readable = []
    for table in tables:
        if not table.schema_usable:
            continue
        if not table.selectable:
            LOGGER.warning(
                "Skipping %s: user %s lacks SELECT on it (GRANT SELECT ON %s TO %s to discover it)",
                table.qualified_name,
                quote_ident(user),
                table.qualified_name,
                quote_ident(user),
            )
            continue
        readable.append(table)
    return readable


def quote_ident(name: str) -> str:
    """Return a name quoted as SQL spells it, for messages that tell the user what to run."""
    return '"' + name.replace('"', '""') + '"'


def resolve_type(type_rows: dict[int, tuple], type_oid: int, typmod: int) -> types.ColumnType | None:
    """Follow domains and arrays to the base type of a column, or None for a type not found.

    Domains nest to any depth; every step reaches a type `type_rows` holds (the catalog query
    follows them to the bottom), so the walk ends within as many steps as there are types.
    """
    row = type_rows.get(type_oid)
    is_array = False
    is_domain = False
    for _ in range(len(type_rows) + 1):
        if row is None:
            return None
        _, typname, typtype, category, typelem, basetype, domain_typmod, type_schema = row
        if typtype == "d":
            is_domain = True
            typmod = domain_typmod if domain_typmod != -1 else typmod
            row = type_rows.get(basetype)
        elif category == "A" and typelem and not is_array:
            is_array = True
            row = type_rows.get(typelem)
        else:
            return types.ColumnType(
                base_name=typname,
                base_kind=typtype,
                base_category=category,
                typmod=typmod,
                is_array=is_array,
                domain_base=(type_schema, typname) if is_domain else None,
            )
    return None


def discover_catalog(conn, config: Config) -> dict:
    """Return the Singer catalog of every table the configured user can read."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        (database_name,) = cur.fetchone()
    conn.rollback()
    kept = Filters.of(config)
    kept.check(conn)
    tables = describe_tables(conn, kept=kept, include_partitions=config.include_partitions)
    for schema_name in sorted(set(config.schemas or []) - {table.schema_name for table in tables}):
        LOGGER.warning(
            "filter_schemas names %s, which holds no table or view: check its spelling (schema names are "
            "case-sensitive) and that it is in database %s",
            quote_ident(schema_name),
            database_name,
        )
    tables = [] if config.metadata_only else readable_tables(tables, config.user)
    streams = [catalog_entry(table, database_name) for table in tables]
    if config.with_metadata:
        streams += [metadata_streams.catalog_entry(stream) for stream in metadata_streams.STREAMS]
    LOGGER.info("Discovered %d streams in database %s", len(streams), database_name)
    return {"streams": streams}


def catalog_entry(table: Table, database_name: str) -> dict:
    """Build the pipelinewise-shaped catalog entry of one table."""
    key_properties = [] if table.is_view else table.primary_key
    properties: dict[str, dict] = {}
    column_metadata = []
    unreadable = []
    for column in table.columns:
        if not column.selectable:
            unreadable.append(column.name)
            continue
        nullable = table.is_view or not (column.not_null or column.name in key_properties)
        schema = types.json_schema(column.type, nullable=nullable) if column.type else None
        if schema is None:
            LOGGER.warning(
                'Column "%s" of %s has type %s, which the tap does not support: it is marked unsupported',
                column.name,
                table.tap_stream_id,
                column.sql_datatype,
            )
            schema = {}
            inclusion = "unsupported"
        else:
            inclusion = "automatic" if column.name in key_properties else "available"
        if column.description:
            schema["description"] = column.description
        properties[column.name] = schema
        column_metadata.append(
            {
                "breadcrumb": ["properties", column.name],
                "metadata": {
                    "sql-datatype": column.sql_datatype,
                    "inclusion": inclusion,
                    "selected-by-default": inclusion != "unsupported",
                },
            }
        )
    if unreadable:
        LOGGER.warning(
            "Columns of %s left out of the catalog, the user lacks SELECT on them: %s",
            table.tap_stream_id,
            ", ".join(unreadable),
        )
    table_metadata = {
        "table-key-properties": key_properties,
        "schema-name": table.schema_name,
        "database-name": database_name,
        "row-count": table.row_count,
        "is-view": table.is_view,
        "valid-replication-keys": [
            column.name
            for column in table.columns
            if column.name in properties and column.type and types.is_orderable(column.type)
        ],
    }
    schema = {"type": "object", "properties": properties}
    if table.description:
        schema["description"] = table.description
    return {
        "table_name": table.name,
        "stream": table.name,
        "tap_stream_id": table.tap_stream_id,
        "schema": schema,
        "metadata": [{"breadcrumb": [], "metadata": table_metadata}, *column_metadata],
    }


def describe_stream_tables(conn, streams: list) -> dict[tuple[str, str], Table]:
    """Describe the selected streams' tables as they are now, in one round of catalog queries."""
    pairs = [(stream.schema_name, stream.table_name) for stream in streams]
    if not pairs:
        return {}
    return {(table.schema_name, table.name): table for table in describe_tables(conn, tables=pairs)}
