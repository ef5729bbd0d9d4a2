"""The publication pgoutput reads: the selected LOG_BASED tables, each with a replica identity.

pgoutput sends the changes of the tables in the publications it is given. The tap changes only
a publication it made itself: one it creates gets a comment naming its slot and `tap_id`
(marker_statement), and only a publication carrying this pipeline's marker, owned by the tap's
user, is ever altered (kept equal to the run's LOG_BASED tables when `create_replication_slot`
allows the tap to set replication up). Any other publication, one a subscriber uses for
example, is read and never altered: the tap uses it as it is when its records would be right
(more tables than needed are fine), and otherwise stops with one line saying what is missing and
the statement its owner can run. A partitioned table is published as itself (not via its root):
its partitions' changes then arrive under their own names and are routed to the stream.

The publication must exist before the slot is created: decoding reads it as of each change, and
a change older than the publication would end the stream with "publication does not exist".
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

import psycopg2
from psycopg2 import extensions, sql

from tap_postgres.config import Config
from tap_postgres.errors import NotSupportedError, ReplicationError
from tap_postgres.server_versions import publishes_generated_columns

LOGGER = logging.getLogger("tap-postgres")

PUBLISHED_ACTIONS = "insert, update, delete, truncate"
# What the records need: without insert, update or delete the target would miss or keep rows
NEEDED_ACTIONS = ("insert", "update", "delete")
MARKER_PREFIX = "Managed by tap-postgres, do not edit this comment: "

# The wanted tables and, for a partitioned one, every partition below it.
_TREE_SQL = """
  FROM unnest(%(schemas)s::text[], %(tables)s::text[]) AS wanted(nspname, relname)
  JOIN pg_namespace wn ON wn.nspname = wanted.nspname
  JOIN pg_class w ON w.relnamespace = wn.oid AND w.relname = wanted.relname
 CROSS JOIN LATERAL (SELECT w.oid UNION SELECT relid FROM pg_partition_tree(w.oid)) AS tree(relid)
  JOIN pg_class c ON c.oid = tree.relid
  JOIN pg_namespace n ON n.oid = c.relnamespace
"""

# Each table, or each partition of a partitioned table, whose UPDATEs and DELETEs the server
# would reject once published: no replica identity (none set, or the default without a primary
# key, or an identity index that is gone).
_WITHOUT_IDENTITY_SQL = (
    "SELECT n.nspname, c.relname"
    + _TREE_SQL
    + """
 WHERE c.relkind = 'r'
   AND (c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
        OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
 ORDER BY 1, 2
"""
)

# The publication itself: its actions, its owner (and whether that is the tap's user), its comment.
_PUBLICATION_SQL = """
SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot, p.puballtables,
       pg_get_userbyid(p.pubowner), p.pubowner = (SELECT oid FROM pg_roles WHERE rolname = current_user),
       obj_description(p.oid, 'pg_publication'),
       coalesce((SELECT json_agg(json_build_array(n.nspname, c.relname))
                   FROM pg_publication_rel r
                   JOIN pg_class c ON c.oid = r.prrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE r.prpubid = p.oid), '[]'),
       to_regclass('pg_catalog.pg_publication_namespace') IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                        WHERE d.refobjid = p.oid AND d.classid = to_regclass('pg_catalog.pg_publication_namespace')),
       to_jsonb(p)->>'pubgencols'
  FROM pg_publication p
 WHERE p.pubname = %(name)s
"""

# For each wanted table: whether the publication covers it in effect (every leaf table of its
# tree is in pg_publication_tables, which resolves FOR TABLE, FOR TABLES IN SCHEMA and FOR ALL
# TABLES alike), whether it is a partitioned table or a partition, and whether a row filter or a
# column list (PostgreSQL 15+) applies to it or to a table of its tree.
_MEMBERSHIP_SQL = (
    """
SELECT wanted.nspname, wanted.relname,
       bool_and(c.relkind <> 'r' OR EXISTS (SELECT 1 FROM pg_publication_tables pt
                                            WHERE pt.pubname = %(name)s AND pt.schemaname = n.nspname
                                              AND pt.tablename = c.relname)),
       bool_or(c.relkind = 'p' OR c.relispartition),
       bool_or(EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                        WHERE p.pubname = %(name)s AND r.prrelid = c.oid AND to_jsonb(r)->>'prqual' IS NOT NULL)),
       bool_or(EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                        WHERE p.pubname = %(name)s AND r.prrelid = c.oid AND to_jsonb(r)->>'prattrs' IS NOT NULL))
"""
    + _TREE_SQL
    + " GROUP BY 1, 2 ORDER BY 1, 2"
)


@dataclasses.dataclass(frozen=True)
class Publication:
    """A publication as the catalog shows it, with the tap's marker when it carries one."""

    name: str
    actions: frozenset[str]
    via_root: bool
    all_tables: bool
    owner: str
    owned_by_user: bool
    marker: dict | None  # {"slot": ..., "tap_id": ...} of the pipeline that made it
    tables: frozenset[tuple[str, str]]  # listed by FOR TABLE
    has_schemas: bool  # FOR TABLES IN SCHEMA
    # publish_generated_columns (18+): "s" stored, "n" none; None before 18, where pgoutput never sends them
    generated_columns: str | None = None

    def made_by(self, slot_name: str, tap_id: str | None) -> bool:
        """Tell whether this pipeline made it (its marker names the slot and tap_id) and may alter it."""
        return (
            self.marker == {"slot": slot_name, "tap_id": tap_id}
            and self.owned_by_user
            and not self.all_tables
            and not self.has_schemas
        )


def marker_statement(name: str, slot_name: str, tap_id: str | None) -> sql.Composed:
    """Return the COMMENT ON PUBLICATION that marks a publication as made by the pipeline of `slot_name`."""
    marker = json.dumps({"slot": slot_name, "tap_id": tap_id})
    return sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(sql.Identifier(name), sql.Literal(MARKER_PREFIX + marker))


def read_marker(comment: str | None) -> dict | None:
    """Return the marker a publication's comment holds, or None when the tap did not make it."""
    if not comment or not comment.startswith(MARKER_PREFIX):
        return None
    try:
        marker = json.loads(comment[len(MARKER_PREFIX) :])
    except ValueError:
        return None
    return marker if isinstance(marker, dict) else None


def read_publication(conn: extensions.connection, name: str) -> Publication | None:
    """Return the publication named `name`, or None when there is none."""
    with conn.cursor() as cur:
        cur.execute(_PUBLICATION_SQL, {"name": name})
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        return None
    *flags, via_root, all_tables, owner, owned_by_user, comment, tables, has_schemas, generated = row
    return Publication(
        name=name,
        actions=frozenset(action for action, on in zip((*NEEDED_ACTIONS, "truncate"), flags, strict=True) if on),
        via_root=via_root,
        all_tables=all_tables,
        owner=owner,
        owned_by_user=owned_by_user,
        marker=read_marker(comment),
        tables=frozenset(tuple(pair) for pair in tables),
        has_schemas=has_schemas,
        generated_columns=generated,
    )


# For each wanted table, what makes it a member of the publication: the pg_publication_rel row of
# it or of a partitioned table above it, the publication's schema entry of its schema (PostgreSQL
# 15+, found through pg_depend so the query parses on older servers), or FOR ALL TABLES. The row's
# oid is new each time a table is added again, and the publication's each time it is made again.
_MEMBERSHIP_TOKEN_SQL = """
SELECT wanted.nspname, wanted.relname,
       p.oid::text || ':' || coalesce(
           CASE WHEN p.puballtables THEN 'all tables' END,
           (SELECT 'table ' || min(r.oid)::text FROM pg_publication_rel r
             WHERE r.prpubid = p.oid
               AND (r.prrelid = w.oid OR r.prrelid IN (SELECT relid FROM pg_partition_ancestors(w.oid)))),
           (SELECT 'schema ' || min(d.objid)::text FROM pg_depend d
             WHERE d.classid = to_regclass('pg_catalog.pg_publication_namespace')
               AND d.refclassid = 'pg_namespace'::regclass AND d.refobjid = w.relnamespace
               AND EXISTS (SELECT 1 FROM pg_depend dp WHERE dp.classid = d.classid AND dp.objid = d.objid
                                                        AND dp.refclassid = 'pg_publication'::regclass
                                                        AND dp.refobjid = p.oid)))
  FROM unnest(%(schemas)s::text[], %(tables)s::text[]) AS wanted(nspname, relname)
  JOIN pg_namespace wn ON wn.nspname = wanted.nspname
  JOIN pg_class w ON w.relnamespace = wn.oid AND w.relname = wanted.relname
  JOIN pg_publication p ON p.pubname = %(name)s
"""


def membership_tokens(
    conn: extensions.connection, name: str, tables: list[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """Return, for each table, a token of its membership in the publication (None when it is no member).

    The token changes whenever the table leaves the publication and comes back, or the publication
    is made again: pgoutput skipped the table's changes in between, which a bookmark recording the
    token can tell.
    """
    with conn.cursor() as cur:
        cur.execute(
            _MEMBERSHIP_TOKEN_SQL,
            {"name": name, "schemas": [schema for schema, _ in tables], "tables": [table for _, table in tables]},
        )
        rows = cur.fetchall()
    conn.rollback()
    tokens: dict[tuple[str, str], str | None] = dict.fromkeys(tables)
    tokens.update({(schema, table): token for schema, table, token in rows})
    return tokens


def ensure_publication(
    conn: extensions.connection,
    config: Config,
    name: str,
    slot_name: str,
    tables: list[tuple[str, str]],
    kept: Callable[[tuple[str, str]], bool] = lambda table: True,
) -> None:
    """Make the tap's own publication hold `tables`, check one it did not make, or raise a one-line error
    naming the statement to run.

    A table is added at once; one the run does not select stays while `kept(table)` says its stream
    has not left the pipeline: pgoutput skips for ever the changes made while a table is out.
    """
    _refuse_tables_without_identity(conn, tables)
    _refuse_full_identity_with_virtual_columns(conn, tables)
    wanted = sorted(tables)
    publication = read_publication(conn, name)
    if publication is not None and not publication.made_by(slot_name, config.tap_id):
        _refuse_another_pipelines(conn, publication, slot_name, config.tap_id)
        check_foreign_publication(conn, publication, wanted, slot_name)
        return
    if publication is not None:
        wanted = sorted(set(wanted) | {table for table in publication.tables if kept(table)})
    statements = _statements_needed(publication, name, slot_name, config.tap_id, wanted, conn.server_version)
    if not statements:
        return
    text = "; ".join(statement.as_string(conn) for statement in statements)
    if not config.create_replication_slot:
        raise ReplicationError(
            f'publication "{name}" does not hold the LOG_BASED tables: run {text} '
            '(or set "create_replication_slot": true to let the tap do it)'
        )
    LOGGER.info("Setting publication %s to the LOG_BASED tables: %s", name, text)
    try:
        with conn.cursor() as cur:
            # the one write the tap makes besides the slot: sessions are read-only unless asked
            cur.execute("SET TRANSACTION READ WRITE")
            for statement in statements:
                cur.execute(statement)
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        reason = str(exc).strip().splitlines()[0]
        raise ReplicationError(
            f'cannot set publication "{name}": {reason}: run {text} as the tables\' owner or a superuser'
        ) from None


def creation_statements(
    conn: extensions.connection, name: str, slot_name: str, tap_id: str | None, tables: list[tuple[str, str]]
) -> str | None:
    """Return the statements that create the tap's publication for `tables`, or None when it exists."""
    if read_publication(conn, name) is not None:
        return None
    statements = _statements_needed(None, name, slot_name, tap_id, sorted(tables), conn.server_version)
    return "; ".join(statement.as_string(conn) for statement in statements)


def _refuse_another_pipelines(
    conn: extensions.connection, publication: Publication, slot_name: str, tap_id: str | None
) -> None:
    """Stop when the publication carries the marker of another pipeline: using it would take that pipeline's."""
    marker = publication.marker
    if marker is None or marker == {"slot": slot_name, "tap_id": tap_id}:
        return
    raise ReplicationError(
        f'publication "{publication.name}" belongs to another pipeline (its comment names slot '
        f'"{marker.get("slot")}" and tap_id {json.dumps(marker.get("tap_id"))}), and this one reads slot "{slot_name}" '
        f"with tap_id {json.dumps(tap_id)}: give this pipeline a tap_id and publication_name of its own; if it "
        f"is the same pipeline renamed, hand the publication over with "
        f"{marker_statement(publication.name, slot_name, tap_id).as_string(conn)}"
    )


def check_foreign_publication(
    conn: extensions.connection, publication: Publication, wanted: list[tuple[str, str]], slot_name: str
) -> None:
    """Use a publication the tap did not make as it is, or raise one line saying what it lacks.

    Never altered: a subscriber may rely on its tables, actions, row filters and column lists.
    Tables beyond the selected ones are harmless (their changes are dropped). A row filter or a
    column list on a selected table would make records wrong (rows or columns missing), and so
    would a publication without insert, update or delete: those are refused.
    """
    name = sql.Identifier(publication.name).as_string(conn)
    with conn.cursor() as cur:
        cur.execute(
            _MEMBERSHIP_SQL,
            {"name": publication.name, "schemas": [s for s, _ in wanted], "tables": [t for _, t in wanted]},
        )
        rows = cur.fetchall()
    conn.rollback()
    how = (
        f'publication "{publication.name}" is not one the tap made (owner {publication.owner}), so the tap reads '
        "it and never changes it"
    )
    own_way = "; or leave publication_name unset to let the tap keep a publication of its own"
    for schema, table, _, partitioned, row_filter, column_list in rows:
        qualified = sql.Identifier(schema, table).as_string(conn)
        if row_filter or column_list:
            what = "a row filter" if row_filter else "a column list"
            lost = "the rows it filters out" if row_filter else "the columns it leaves out"
            raise ReplicationError(
                f"{how}: it has {what} on {qualified}, so the records would miss {lost}: name a publication "
                f"without filters on the selected tables in publication_name{own_way}"
            )
        if partitioned and publication.via_root:
            raise ReplicationError(
                f"{how}: it sends the changes of {qualified}'s partitions as their root's "
                f"(publish_via_partition_root), which the tap cannot route: its owner can run ALTER PUBLICATION "
                f"{name} SET (publish_via_partition_root = false){own_way}"
            )
    missing_actions = [action for action in NEEDED_ACTIONS if action not in publication.actions]
    if missing_actions:
        publish = ", ".join(a for a in (*NEEDED_ACTIONS, "truncate") if a in publication.actions or a in NEEDED_ACTIONS)
        raise ReplicationError(
            f"{how}: it does not publish {', '.join(missing_actions)}, so the target would miss or keep rows: its "
            f"owner {publication.owner} can run ALTER PUBLICATION {name} SET (publish = '{publish}'){own_way}"
        )
    missing = [sql.Identifier(schema, table).as_string(conn) for schema, table, covered, *_ in rows if not covered]
    if missing:
        fix = f"ALTER PUBLICATION {name} ADD TABLE {', '.join(missing)}"
        if publication.all_tables:
            fix = f"ALTER PUBLICATION {name} SET (publish_via_partition_root = false)"
        mark = ""
        if publication.name == slot_name and publication.marker is None and publication.owned_by_user:
            mark = f"; if the tap made it, mark it as its own with {marker_statement(publication.name, slot_name, None).as_string(conn)}"
        raise ReplicationError(
            f"{how}: it lacks {', '.join(missing)}: its owner {publication.owner} can run {fix}{mark}"
        )
    if "truncate" not in publication.actions:
        LOGGER.warning(
            "publication %s does not publish truncate: a TRUNCATE of a selected table will not be reported", name
        )


def _refuse_tables(conn: extensions.connection, query: str, tables: list[tuple[str, str]], problem: str) -> None:
    """Raise NotSupportedError naming the tables of the trees of `tables` that `query` (over _TREE_SQL) finds."""
    with conn.cursor() as cur:
        cur.execute(query, {"schemas": [schema for schema, _ in tables], "tables": [table for _, table in tables]})
        found = cur.fetchall()
    conn.rollback()
    if found:
        names = ", ".join(sql.Identifier(*pair).as_string(conn) for pair in found)
        raise NotSupportedError(f"{names} {problem}")


def _refuse_tables_without_identity(conn: extensions.connection, tables: list[tuple[str, str]]) -> None:
    _refuse_tables(
        conn,
        _WITHOUT_IDENTITY_SQL,
        tables,
        "has no replica identity (no primary key): in a publication the server would reject its "
        "UPDATEs and DELETEs, so pgoutput cannot read it. Give it a primary key or REPLICA IDENTITY FULL, "
        "or sync it with FULL_TABLE or INCREMENTAL",
    )


# Each table, or partition, with REPLICA IDENTITY FULL and a virtual generated column (18): no
# publication can carry a virtual column, so once published the server rejects its UPDATEs and DELETEs.
_FULL_IDENTITY_WITH_VIRTUAL_SQL = (
    "SELECT DISTINCT n.nspname, c.relname"
    + _TREE_SQL
    + """
 WHERE c.relkind = 'r' AND c.relreplident = 'f'
   AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                              AND to_jsonb(a)->>'attgenerated' = 'v')
 ORDER BY 1, 2
"""
)


def _refuse_full_identity_with_virtual_columns(conn: extensions.connection, tables: list[tuple[str, str]]) -> None:
    """Refuse, before it is published, a FULL-identity table with a virtual generated column (18)."""
    if not publishes_generated_columns(conn.server_version):
        return
    _refuse_tables(
        conn,
        _FULL_IDENTITY_WITH_VIRTUAL_SQL,
        tables,
        "has REPLICA IDENTITY FULL and a virtual generated column, which no publication can carry: in one, the "
        "server would reject its UPDATEs and DELETEs, so pgoutput cannot read it. Give it a primary key as its "
        "replica identity (REPLICA IDENTITY DEFAULT), or sync it with FULL_TABLE or INCREMENTAL",
    )


def _statements_needed(
    publication: Publication | None,
    name: str,
    slot_name: str,
    tap_id: str | None,
    wanted: list[tuple[str, str]],
    server_version: int,
) -> list[sql.Composed]:
    """Return the statements that make the tap's own publication hold exactly `wanted` (none when it does).

    On 18 it publishes stored generated columns too: once a REPLICA IDENTITY FULL table is in a
    publication that leaves its generated columns out, the server refuses its UPDATEs and DELETEs
    ("Replica identity must not contain unpublished generated columns"), the users' included.
    """
    table_list = sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in wanted)
    generated = publishes_generated_columns(server_version)
    options = sql.SQL("(publish = {}, publish_via_partition_root = false{})").format(
        sql.Literal(PUBLISHED_ACTIONS), sql.SQL(", publish_generated_columns = stored" if generated else "")
    )
    if publication is None:
        create = sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH {}").format(sql.Identifier(name), table_list, options)
        return [create, marker_statement(name, slot_name, tap_id)]
    statements = []
    # ADD and DROP, not SET TABLE: the tables that stay keep their membership (and no window opens)
    for verb, changed in (
        ("ADD", sorted(set(wanted) - publication.tables)),
        ("DROP", sorted(publication.tables - set(wanted))),
    ):
        if changed:
            listed = sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in changed)
            statements.append(sql.SQL(f"ALTER PUBLICATION {{}} {verb} TABLE {{}}").format(sql.Identifier(name), listed))
    wrong_generated = generated and publication.generated_columns != "s"
    if publication.actions != {*NEEDED_ACTIONS, "truncate"} or publication.via_root or wrong_generated:
        statements.append(sql.SQL("ALTER PUBLICATION {} SET {}").format(sql.Identifier(name), options))
    return statements
