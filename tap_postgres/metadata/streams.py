"""The catalog streams: each one's name, key, JSON schema and the catalog query whose rows the server renders.

Every query selects the stream's properties in order, `database` first, with the discovery filters
bound as parameters (tap_postgres.filters) and the version differences chosen in
tap_postgres.server_versions. Records are `row_to_json` of these rows, so each column's SQL type is
the one its schema says: text, bigint, float8, boolean, timestamptz, text[] or float8[].
"""

from __future__ import annotations

import dataclasses

from tap_postgres import server_versions
from tap_postgres.filters import relation_conditions, schema_conditions

# The schema part of every catalog stream id: PostgreSQL reserves schema names starting with pg_,
# so no table's `schema-table` id can ever be one of these.
STREAM_SCHEMA = "pg_metadata"

KEY = {"type": ["string"]}
TEXT = {"type": ["null", "string"]}
INTEGER = {"type": ["null", "integer"]}
NUMBER = {"type": ["null", "number"]}
BOOLEAN = {"type": ["null", "boolean"]}
TIMESTAMP = {"type": ["null", "string"], "format": "date-time"}
TEXTS = {"type": ["null", "array"], "items": {"type": ["null", "string"]}}
NUMBERS = {"type": ["null", "array"], "items": {"type": ["null", "number"]}}


@dataclasses.dataclass(frozen=True)
class MetadataStream:
    """One catalog stream: its records are the rows of `query(server_version)`."""

    name: str
    description: str
    key_properties: tuple[str, ...]
    properties: dict[str, dict]
    sql: str  # the query; {masked(...)} is applied by `query`, {version} pieces are filled in there
    needs: str  # what the user needs to read it all, as the README and the skip warning say
    incremental: bool = False  # statement usage: deltas of counters, not a snapshot

    @property
    def tap_stream_id(self) -> str:
        """The stream's id, `pg_metadata-<name>`."""
        return f"{STREAM_SCHEMA}-{self.name}"

    @property
    def schema(self) -> dict:
        """The stream's JSON schema."""
        return {"type": "object", "properties": self.properties, "description": self.description}

    def query(self, server_version: int, **pieces: str) -> str:
        """Return the stream's query for a server, with its version-dependent pieces filled in."""
        return self.sql.format(
            function_body=server_versions.function_body_sql(server_version),
            membership_options=server_versions.membership_options_sql(server_version),
            range_statistics=server_versions.range_statistics_sql(server_version),
            **pieces,
        )


def masked(expression: str) -> str:
    """Return SQL text as metadata_sql_text says: kept, its HMAC-SHA256 in hex, or null.

    HMAC(K, m) = H((K xor opad) || H((K xor ipad) || m)): the tap binds the two padded keys, so the
    server hashes the text without the text or the key ever passing through the tap.
    """
    return (
        f"CASE %(sql_text)s WHEN 'keep' THEN ({expression}) WHEN 'hash' THEN encode(sha256(%(hmac_outer)s::bytea "
        f"|| sha256(%(hmac_inner)s::bytea || convert_to(({expression}), 'UTF8'))), 'hex') END"
    )


def _doubled(text: str) -> str:
    """Double the braces of SQL text that is put through str.format."""
    return text.replace("{", "{{").replace("}", "}}")


# the relations discovery keeps, as the CTE `kept` of the queries that describe relations
KEPT = _doubled(
    """WITH kept AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {schemas} {relations})
""".format(schemas=schema_conditions("n"), relations=relation_conditions("n", "c"))
)
SCHEMAS = _doubled(schema_conditions("n"))
RELATION_KIND = (
    "CASE {c}.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view' "
    "WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' END"
)
DB = "current_database()::text AS database"


def _columns(**properties: dict) -> dict[str, dict]:
    """Return a stream's properties: `database` first, then these."""
    return {"database": KEY, **properties}


# the key of what belongs to one table (a column, constraint, index, policy)
TABLE_OBJECT_KEY = ("database", "schema_name", "table_name", "name")


def _table_object(**properties: dict) -> dict[str, dict]:
    """Return the properties of what belongs to one table: its key, then these."""
    return _columns(schema_name=KEY, table_name=KEY, name=KEY, **properties)


DATABASES = MetadataStream(
    "databases",
    "The database each connection reads: owner, encoding, size, comment.",
    ("database",),
    _columns(
        owner=TEXT,
        encoding=TEXT,
        collation_name=TEXT,
        ctype=TEXT,
        total_bytes=INTEGER,
        connection_limit=INTEGER,
        comment=TEXT,
    ),
    f"""SELECT {DB}, pg_get_userbyid(d.datdba)::text AS owner, pg_encoding_to_char(d.encoding)::text AS encoding,
       d.datcollate::text AS collation_name, d.datctype::text AS ctype, pg_database_size(d.oid) AS total_bytes,
       CASE WHEN d.datconnlimit >= 0 THEN d.datconnlimit END::bigint AS connection_limit,
       shobj_description(d.oid, 'pg_database') AS comment
  FROM pg_database d WHERE d.datname = current_database()""",
    "CONNECT on the database",
)

SCHEMAS_STREAM = MetadataStream(
    "schemas",
    "Schemas with their owner, comment and how many tables and views they hold.",
    ("database", "name"),
    _columns(name=KEY, owner=TEXT, comment=TEXT, table_count=INTEGER, view_count=INTEGER),
    f"""SELECT {DB}, n.nspname::text AS name, pg_get_userbyid(n.nspowner)::text AS owner,
       obj_description(n.oid, 'pg_namespace') AS comment,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'f')) AS table_count,
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('v', 'm')) AS view_count
  FROM pg_namespace n WHERE {SCHEMAS}""",
    "nothing: pg_namespace is readable by every user",
)

RELATIONS = MetadataStream(
    "relations",
    "Tables, views, materialized views, partitioned and foreign tables.",
    ("database", "schema_name", "name"),
    _columns(
        schema_name=KEY,
        name=KEY,
        kind=TEXT,
        owner=TEXT,
        total_bytes=INTEGER,
        row_estimate=INTEGER,
        comment=TEXT,
        view_definition=TEXT,
        populated=BOOLEAN,
        partition_strategy=TEXT,
        partition_key=TEXT,
        partition_bound=TEXT,
        parent_schema=TEXT,
        parent_name=TEXT,
        row_security=BOOLEAN,
        force_row_security=BOOLEAN,
        persistence=TEXT,
    ),
    KEPT
    + f"""SELECT {DB}, k.nspname::text AS schema_name, k.relname::text AS name, {RELATION_KIND.format(c="c")} AS kind,
       pg_get_userbyid(c.relowner)::text AS owner,
       CASE WHEN c.relkind = 'p' THEN (SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t)
            WHEN c.relkind IN ('r', 'm') THEN pg_total_relation_size(c.oid) END::bigint AS total_bytes,
       -- reltuples is -1 (14+) or 0 with relpages 0 (13) before the first ANALYZE or VACUUM: not known
       CASE WHEN c.reltuples >= 0 AND (c.reltuples > 0 OR c.relpages > 0) THEN c.reltuples END::bigint AS row_estimate,
       obj_description(c.oid, 'pg_class') AS comment,
       {{masked_view_definition}} AS view_definition,
       c.relispopulated AS populated,
       CASE pt.partstrat WHEN 'r' THEN 'range' WHEN 'l' THEN 'list' WHEN 'h' THEN 'hash' END AS partition_strategy,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS partition_bound,
       pn.nspname::text AS parent_schema, pc.relname::text AS parent_name,
       c.relrowsecurity AS row_security, c.relforcerowsecurity AS force_row_security,
       CASE c.relpersistence WHEN 'p' THEN 'permanent' WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' END
           AS persistence
  FROM kept k
  JOIN pg_class c ON c.oid = k.oid
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
  LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
  LEFT JOIN pg_class pc ON pc.oid = i.inhparent
  LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace""",
    "nothing: pg_class is readable by every user",
)

COLUMNS = MetadataStream(
    "columns",
    "Columns of the relations: type with modifiers, nullable, default, generated, identity, comment.",
    TABLE_OBJECT_KEY,
    _table_object(
        position=INTEGER,
        data_type=TEXT,
        type_schema=TEXT,
        type_name=TEXT,
        nullable=BOOLEAN,
        default=TEXT,
        generated=TEXT,
        generation_expression=TEXT,
        identity=TEXT,
        identity_start=INTEGER,
        identity_increment=INTEGER,
        identity_minimum=INTEGER,
        identity_maximum=INTEGER,
        identity_cycle=BOOLEAN,
        collation_name=TEXT,
        comment=TEXT,
    ),
    KEPT
    + f"""SELECT {DB}, k.nspname::text AS schema_name, k.relname::text AS table_name, a.attname::text AS name,
       a.attnum::bigint AS position, format_type(a.atttypid, a.atttypmod) AS data_type,
       tn.nspname::text AS type_schema, t.typname::text AS type_name, NOT a.attnotnull AS nullable,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS "default",
       CASE a.attgenerated WHEN 's' THEN 'stored' WHEN 'v' THEN 'virtual' END AS generated,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END AS generation_expression,
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
       seq.seqstart AS identity_start, seq.seqincrement AS identity_increment, seq.seqmin AS identity_minimum,
       seq.seqmax AS identity_maximum, seq.seqcycle AS identity_cycle,
       CASE WHEN a.attcollation <> t.typcollation THEN (SELECT collname::text FROM pg_collation
                                                        WHERE oid = a.attcollation) END AS collation_name,
       col_description(a.attrelid, a.attnum) AS comment
  FROM kept k
  JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_depend dep ON a.attidentity <> '' AND dep.classid = 'pg_class'::regclass
        AND dep.refclassid = 'pg_class'::regclass AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum
        AND dep.deptype = 'i'
  LEFT JOIN pg_sequence seq ON seq.seqrelid = dep.objid""",
    "nothing: pg_attribute is readable by every user",
)

_CONSTRAINT_ACTION = (
    "CASE {x} WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE' "
    "WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' END"
)


def _attnames(relid: str, attnums: str) -> str:
    """Return SQL of the column names of `attnums` (an int2[]) of relation `relid`, in their order."""
    return (
        f"ARRAY(SELECT a.attname::text FROM unnest({attnums}) WITH ORDINALITY AS u(attnum, position) "
        f"JOIN pg_attribute a ON a.attrelid = {relid} AND a.attnum = u.attnum ORDER BY u.position)"
    )


CONSTRAINTS = MetadataStream(
    "constraints",
    "Primary key, unique, foreign key (with its actions), check, exclusion and not-null constraints.",
    TABLE_OBJECT_KEY,
    _table_object(
        kind=TEXT,
        columns=TEXTS,
        definition=TEXT,
        referenced_schema=TEXT,
        referenced_table=TEXT,
        referenced_columns=TEXTS,
        on_update=TEXT,
        on_delete=TEXT,
        match_type=TEXT,
        is_deferrable=BOOLEAN,
        initially_deferred=BOOLEAN,
        validated=BOOLEAN,
    ),
    KEPT
    + f"""SELECT {DB}, k.nspname::text AS schema_name, k.relname::text AS table_name, con.conname::text AS name,
       CASE con.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key'
            WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' WHEN 'n' THEN 'not null'
            ELSE con.contype::text END AS kind,
       {_doubled(_attnames("con.conrelid", "con.conkey"))} AS columns,
       pg_get_constraintdef(con.oid) AS definition,
       rn.nspname::text AS referenced_schema, rc.relname::text AS referenced_table,
       CASE WHEN con.contype = 'f' THEN {_doubled(_attnames("con.confrelid", "con.confkey"))} END AS referenced_columns,
       CASE WHEN con.contype = 'f' THEN {_CONSTRAINT_ACTION.format(x="con.confupdtype")} END AS on_update,
       CASE WHEN con.contype = 'f' THEN {_CONSTRAINT_ACTION.format(x="con.confdeltype")} END AS on_delete,
       CASE WHEN con.contype = 'f' THEN CASE con.confmatchtype WHEN 'f' THEN 'FULL' WHEN 'p' THEN 'PARTIAL'
            WHEN 's' THEN 'SIMPLE' END END AS match_type,
       con.condeferrable AS is_deferrable, con.condeferred AS initially_deferred, con.convalidated AS validated
  FROM kept k
  JOIN pg_constraint con ON con.conrelid = k.oid
  LEFT JOIN pg_class rc ON rc.oid = con.confrelid
  LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace""",
    "nothing: the system catalogs are readable by every user",
)

INDEXES = MetadataStream(
    "indexes",
    "Indexes: method, key columns or expressions, uniqueness, predicate, size.",
    TABLE_OBJECT_KEY,
    _table_object(
        method=TEXT,
        key_columns=TEXTS,
        is_unique=BOOLEAN,
        is_primary=BOOLEAN,
        predicate=TEXT,
        definition=TEXT,
        total_bytes=INTEGER,
        valid=BOOLEAN,
    ),
    KEPT
    + f"""SELECT {DB}, k.nspname::text AS schema_name, k.relname::text AS table_name, ic.relname::text AS name,
       am.amname::text AS method,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, n, true) FROM generate_series(1, i.indnkeyatts::int) AS n)
           AS key_columns,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, pg_get_expr(i.indpred, i.indrelid) AS predicate,
       pg_get_indexdef(i.indexrelid) AS definition, pg_relation_size(i.indexrelid) AS total_bytes,
       i.indisvalid AS valid
  FROM kept k
  JOIN pg_index i ON i.indrelid = k.oid
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_am am ON am.oid = ic.relam""",
    "nothing: the system catalogs are readable by every user",
)

SEQUENCES = MetadataStream(
    "sequences",
    "Sequences: type, bounds, increment, the column owning them, the last value where the user may read it.",
    ("database", "schema_name", "name"),
    _columns(
        schema_name=KEY,
        name=KEY,
        owner=TEXT,
        data_type=TEXT,
        start_value=INTEGER,
        increment=INTEGER,
        minimum=INTEGER,
        maximum=INTEGER,
        cache_size=INTEGER,
        cycle=BOOLEAN,
        last_value=INTEGER,
        owned_by=TEXT,
    ),
    f"""SELECT {DB}, n.nspname::text AS schema_name, c.relname::text AS name, pg_get_userbyid(c.relowner)::text AS owner,
       format_type(s.seqtypid, NULL) AS data_type, s.seqstart AS start_value, s.seqincrement AS increment,
       s.seqmin AS minimum, s.seqmax AS maximum, s.seqcache AS cache_size, s.seqcycle AS cycle,
       -- as pg_sequences does: null without SELECT or USAGE on the sequence
       CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE') THEN pg_sequence_last_value(c.oid) END AS last_value,
       (SELECT tn.nspname || '.' || tc.relname || '.' || ta.attname
          FROM pg_depend d
          JOIN pg_class tc ON tc.oid = d.refobjid
          JOIN pg_namespace tn ON tn.oid = tc.relnamespace
          JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
           AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_sequence s ON s.seqrelid = c.oid
 WHERE c.relkind = 'S' AND {SCHEMAS}""",
    "SELECT or USAGE on a sequence for its last_value (null without)",
)

TYPES = MetadataStream(
    "types",
    "User-defined types: enums with their labels, domains with their base type and checks, composites, ranges.",
    ("database", "schema_name", "name"),
    _columns(
        schema_name=KEY,
        name=KEY,
        kind=TEXT,
        owner=TEXT,
        labels=TEXTS,
        base_type=TEXT,
        not_null=BOOLEAN,
        default=TEXT,
        checks=TEXTS,
        attributes=TEXTS,
        comment=TEXT,
    ),
    f"""SELECT {DB}, n.nspname::text AS schema_name, t.typname::text AS name,
       CASE t.typtype WHEN 'e' THEN 'enum' WHEN 'd' THEN 'domain' WHEN 'c' THEN 'composite' WHEN 'r' THEN 'range'
            WHEN 'm' THEN 'multirange' WHEN 'b' THEN 'base' ELSE t.typtype::text END AS kind,
       pg_get_userbyid(t.typowner)::text AS owner,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
                                            ORDER BY e.enumsortorder) END AS labels,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
       t.typnotnull AS not_null, t.typdefault AS "default",
       CASE WHEN t.typtype = 'd' THEN ARRAY(SELECT pg_get_constraintdef(con.oid) FROM pg_constraint con
                                            WHERE con.contypid = t.oid AND con.contype = 'c'
                                            ORDER BY con.conname) END AS checks,
       CASE WHEN t.typtype = 'c' THEN ARRAY(SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                            FROM pg_attribute a
                                            WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
                                            ORDER BY a.attnum) END AS attributes,
       obj_description(t.oid, 'pg_type') AS comment
  FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE {SCHEMAS}
   -- not the array type every type gets, nor the row type of each table, view or sequence
   AND NOT EXISTS (SELECT 1 FROM pg_type element WHERE element.oid = t.typelem AND element.typarray = t.oid)
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')""",
    "nothing: the system catalogs are readable by every user",
)

FUNCTIONS = MetadataStream(
    "functions",
    "Functions, procedures, aggregates and window functions: arguments, result, language, body, owner.",
    ("database", "signature"),
    _columns(
        signature=KEY,
        schema_name=TEXT,
        name=TEXT,
        identity_arguments=TEXT,
        kind=TEXT,
        language=TEXT,
        arguments=TEXT,
        return_type=TEXT,
        body=TEXT,
        owner=TEXT,
        volatility=TEXT,
        security_definer=BOOLEAN,
        strict=BOOLEAN,
        comment=TEXT,
    ),
    f"""SELECT {DB}, quote_ident(n.nspname) || '.' || quote_ident(p.proname)
           || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS signature,
       n.nspname::text AS schema_name, p.proname::text AS name,
       pg_get_function_identity_arguments(p.oid) AS identity_arguments,
       CASE p.prokind WHEN 'f' THEN 'function' WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate'
            WHEN 'w' THEN 'window' END AS kind,
       l.lanname::text AS language, pg_get_function_arguments(p.oid) AS arguments,
       CASE WHEN p.prokind <> 'p' THEN pg_get_function_result(p.oid) END AS return_type,
       {{masked_function_body}} AS body,
       pg_get_userbyid(p.proowner)::text AS owner,
       CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' WHEN 'v' THEN 'volatile' END
           AS volatility,
       p.prosecdef AS security_definer, p.proisstrict AS strict, obj_description(p.oid, 'pg_proc') AS comment
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
 WHERE {SCHEMAS}""",
    "nothing: the system catalogs are readable by every user",
)

ROLES = MetadataStream(
    "roles",
    "Roles from pg_roles (never pg_authid: no password hash is read).",
    ("database", "name"),
    _columns(
        name=KEY,
        superuser=BOOLEAN,
        inherit=BOOLEAN,
        create_role=BOOLEAN,
        create_database=BOOLEAN,
        can_login=BOOLEAN,
        replication=BOOLEAN,
        bypass_row_security=BOOLEAN,
        connection_limit=INTEGER,
        valid_until=TIMESTAMP,
        comment=TEXT,
    ),
    f"""SELECT {DB}, r.rolname::text AS name, r.rolsuper AS superuser, r.rolinherit AS inherit,
       r.rolcreaterole AS create_role, r.rolcreatedb AS create_database, r.rolcanlogin AS can_login,
       r.rolreplication AS replication, r.rolbypassrls AS bypass_row_security,
       CASE WHEN r.rolconnlimit >= 0 THEN r.rolconnlimit END::bigint AS connection_limit,
       CASE WHEN isfinite(r.rolvaliduntil) THEN r.rolvaliduntil END AS valid_until,
       shobj_description(r.oid, 'pg_authid') AS comment
  FROM pg_roles r""",
    "nothing (pg_roles is readable by every user)",
)

ROLE_MEMBERSHIPS = MetadataStream(
    "role_memberships",
    "Which role is a member of which, granted by whom, with which options.",
    ("database", "role", "member", "grantor"),
    _columns(
        role=KEY,
        member=KEY,
        grantor=KEY,
        admin_option=BOOLEAN,
        inherit_option=BOOLEAN,
        set_option=BOOLEAN,
    ),
    f"""SELECT {DB}, r.rolname::text AS role, m.rolname::text AS member,
       coalesce(g.rolname::text, am.grantor::text) AS grantor, am.admin_option, {{membership_options}}
  FROM pg_auth_members am
  JOIN pg_roles r ON r.oid = am.roleid
  JOIN pg_roles m ON m.oid = am.member
  LEFT JOIN pg_roles g ON g.oid = am.grantor""",
    "nothing (pg_auth_members is readable by every user)",
)

_GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END AS grantee"
_GRANT = f"{_GRANTEE}, a.privilege_type::text AS privilege, pg_get_userbyid(a.grantor)::text AS grantor"

GRANTS = MetadataStream(
    "grants",
    "Privileges on the database, schemas, relations, columns, sequences and functions (defaults included). "
    "`object` is the object's name as SQL spells it, quoted, which with its type identifies it.",
    ("database", "object_type", "object", "grantee", "privilege", "grantor"),
    _columns(
        object_type=KEY,
        object=KEY,
        grantee=KEY,
        privilege=KEY,
        grantor=KEY,
        schema_name=TEXT,
        object_name=TEXT,
        column_name=TEXT,
        is_grantable=BOOLEAN,
    ),
    KEPT
    + f"""SELECT {DB}, 'database' AS object_type, quote_ident(d.datname) AS object, {_GRANT},
       NULL::text AS schema_name, d.datname::text AS object_name, NULL::text AS column_name, a.is_grantable
  FROM pg_database d CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
 WHERE d.datname = current_database()
UNION ALL
SELECT {DB}, 'schema', quote_ident(n.nspname), {_GRANT}, n.nspname::text, n.nspname::text, NULL, a.is_grantable
  FROM pg_namespace n CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
 WHERE {SCHEMAS}
UNION ALL
SELECT {DB}, {RELATION_KIND.format(c="c")}, quote_ident(k.nspname) || '.' || quote_ident(k.relname), {_GRANT},
       k.nspname::text, k.relname::text, NULL, a.is_grantable
  FROM kept k JOIN pg_class c ON c.oid = k.oid
 CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
UNION ALL
SELECT {DB}, 'column', quote_ident(k.nspname) || '.' || quote_ident(k.relname) || '.' || quote_ident(att.attname),
       {_GRANT}, k.nspname::text, k.relname::text, att.attname::text, a.is_grantable
  FROM kept k JOIN pg_attribute att ON att.attrelid = k.oid AND att.attnum > 0 AND NOT att.attisdropped
 CROSS JOIN LATERAL aclexplode(att.attacl) a
UNION ALL
SELECT {DB}, 'sequence', quote_ident(n.nspname) || '.' || quote_ident(c.relname), {_GRANT},
       n.nspname::text, c.relname::text, NULL, a.is_grantable
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('s', c.relowner))) a
 WHERE c.relkind = 'S' AND {SCHEMAS}
UNION ALL
SELECT {DB}, CASE WHEN p.prokind = 'p' THEN 'procedure' ELSE 'function' END,
       quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       {_GRANT}, n.nspname::text, p.proname::text, NULL, a.is_grantable
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE {SCHEMAS}""",
    "nothing: the ACLs are readable by every user",
)

POLICIES = MetadataStream(
    "policies",
    "Row-level security policies: command, roles, USING and WITH CHECK expressions.",
    TABLE_OBJECT_KEY,
    _table_object(
        permissive=BOOLEAN,
        command=TEXT,
        roles=TEXTS,
        using_expression=TEXT,
        check_expression=TEXT,
    ),
    KEPT
    + f"""SELECT {DB}, k.nspname::text AS schema_name, k.relname::text AS table_name, p.polname::text AS name,
       p.polpermissive AS permissive,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE'
            WHEN '*' THEN 'ALL' END AS command,
       CASE WHEN p.polroles = '{{{{0}}}}' THEN ARRAY['PUBLIC']
            ELSE ARRAY(SELECT r.rolname::text FROM pg_roles r WHERE r.oid = ANY(p.polroles) ORDER BY r.rolname) END
           AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using_expression,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expression
  FROM kept k
  JOIN pg_policy p ON p.polrelid = k.oid""",
    "nothing: the system catalogs are readable by every user",
)

LINEAGE = MetadataStream(
    "lineage",
    "Column-level lineage of views and materialized views, from the server's own rule and dependency records: "
    "`direct` (the view column is the source column), `expression` (the view column is computed from it), "
    "`query` (the view's query reads it elsewhere: a join, a filter; view_column is null). `edge` names both "
    "ends as SQL spells them, quoted: `view[.column] <- source.column`.",
    ("database", "edge"),
    _columns(
        edge=KEY,
        view_schema=TEXT,
        view_name=TEXT,
        view_column=TEXT,
        source_schema=TEXT,
        source_table=TEXT,
        source_column=TEXT,
        kind=TEXT,
        view_kind=TEXT,
        source_kind=TEXT,
    ),
    f"""SELECT {DB},
       quote_ident(vn.nspname) || '.' || quote_ident(vc.relname) || coalesce('.' || quote_ident(va.attname), '')
           || ' <- ' || quote_ident(sn.nspname) || '.' || quote_ident(sc.relname) || '.' || quote_ident(sa.attname)
           AS edge,
       vn.nspname::text AS view_schema, vc.relname::text AS view_name, va.attname::text AS view_column, sn.nspname::text AS source_schema,
       sc.relname::text AS source_table, sa.attname::text AS source_column, e.kind,
       {RELATION_KIND.format(c="vc")} AS view_kind, {RELATION_KIND.format(c="sc")} AS source_kind
  FROM unnest(%(lineage_views)s::oid[], %(lineage_view_columns)s::int[], %(lineage_sources)s::oid[],
              %(lineage_source_columns)s::int[], %(lineage_kinds)s::text[]) AS e(view, view_column, source,
                                                                                  source_column, kind)
  JOIN pg_class vc ON vc.oid = e.view
  JOIN pg_namespace vn ON vn.oid = vc.relnamespace
  LEFT JOIN pg_attribute va ON va.attrelid = e.view AND va.attnum = e.view_column
  JOIN pg_class sc ON sc.oid = e.source
  JOIN pg_namespace sn ON sn.oid = sc.relnamespace
  JOIN pg_attribute sa ON sa.attrelid = e.source AND sa.attnum = e.source_column""",
    "nothing: pg_rewrite and pg_depend are readable by every user",
)

_STATS_ARRAY = "CASE WHEN {x} IS NOT NULL THEN ARRAY(SELECT unnest({x}::text::text[])) END"

COLUMN_STATISTICS = MetadataStream(
    "column_statistics",
    "The planner's statistics of each column after ANALYZE (pg_stats): null fraction, distinct values, "
    "most common values and their frequencies, histogram bounds, correlation.",
    ("database", "schema_name", "table_name", "column_name", "inherited"),
    _columns(
        schema_name=KEY,
        table_name=KEY,
        column_name=KEY,
        inherited={"type": ["boolean"]},
        null_fraction=NUMBER,
        average_width=INTEGER,
        distinct_values=NUMBER,
        most_common_values=TEXTS,
        most_common_frequencies=NUMBERS,
        histogram_bounds=TEXTS,
        correlation=NUMBER,
        range_empty_fraction=NUMBER,
    ),
    f"""SELECT {DB}, s.schemaname::text AS schema_name, s.tablename::text AS table_name,
       s.attname::text AS column_name, s.inherited, s.null_frac::float8 AS null_fraction,
       s.avg_width::bigint AS average_width, s.n_distinct::float8 AS distinct_values,
       {_doubled(_STATS_ARRAY.format(x="s.most_common_vals"))} AS most_common_values,
       s.most_common_freqs::float8[] AS most_common_frequencies,
       {_doubled(_STATS_ARRAY.format(x="s.histogram_bounds"))} AS histogram_bounds,
       s.correlation::float8 AS correlation, {{range_statistics}}
  FROM pg_stats s
  JOIN pg_namespace n ON n.nspname = s.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
 WHERE {SCHEMAS} {_doubled(relation_conditions("n", "c"))}""",
    "SELECT on a table (or the column) for its rows: pg_stats shows only what the user may read",
)

STATEMENT_USAGE = MetadataStream(
    "statement_usage",
    "Statement usage from pg_stat_statements: what each statement cost between two runs (deltas of its "
    "counters; the first run, or after a reset, the counts since the counters started).",
    ("database", "role", "query_id", "toplevel", "observed_to"),
    _columns(
        role=KEY,
        query_id=KEY,
        toplevel={"type": ["boolean"]},
        observed_to={"type": ["string"], "format": "date-time"},
        observed_from=TIMESTAMP,
        counted_from_zero=BOOLEAN,
        query=TEXT,
        calls=INTEGER,
        rows=INTEGER,
        total_exec_time_ms=NUMBER,
        total_plan_time_ms=NUMBER,
        shared_blocks_hit=INTEGER,
        shared_blocks_read=INTEGER,
    ),
    "",  # built by tap_postgres.metadata.usage, which reads the previous run's counters
    "the pg_stat_statements extension in the database (with shared_preload_libraries) and membership in "
    "pg_read_all_stats to see other roles' statement texts",
    incremental=True,
)

STREAMS: tuple[MetadataStream, ...] = (
    DATABASES,
    SCHEMAS_STREAM,
    RELATIONS,
    COLUMNS,
    CONSTRAINTS,
    INDEXES,
    SEQUENCES,
    TYPES,
    FUNCTIONS,
    ROLES,
    ROLE_MEMBERSHIPS,
    GRANTS,
    POLICIES,
    LINEAGE,
    COLUMN_STATISTICS,
    STATEMENT_USAGE,
)
BY_ID = {stream.tap_stream_id: stream for stream in STREAMS}


def catalog_entry(stream: MetadataStream) -> dict:
    """Return the catalog entry of a catalog stream, shaped like a table's so any catalog tool selects it."""
    table_metadata = {
        "table-key-properties": list(stream.key_properties),
        "schema-name": STREAM_SCHEMA,
        "is-view": False,
        "replication-method": "FULL_TABLE",
        "forced-replication-method": "FULL_TABLE",
        "valid-replication-keys": [],
        "metadata-stream": True,
    }
    columns = [
        {
            "breadcrumb": ["properties", name],
            "metadata": {"inclusion": "automatic" if name in stream.key_properties else "available"},
        }
        for name in stream.properties
    ]
    return {
        "table_name": stream.name,
        "stream": stream.name,
        "tap_stream_id": stream.tap_stream_id,
        "schema": stream.schema,
        "metadata": [{"breadcrumb": [], "metadata": table_metadata}, *columns],
    }
