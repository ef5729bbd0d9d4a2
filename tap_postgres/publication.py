"""The publication pgoutput reads: exactly the selected LOG_BASED tables, each with a replica identity.

pgoutput sends the changes of the tables in the publications it is given. The tap keeps one
publication per pipeline (named like its slot unless `publication_name` says otherwise) equal to
the run's LOG_BASED tables: it creates or corrects it when `create_replication_slot` allows the
tap to set replication up, and otherwise names the exact statement to run. A partitioned table is
published as itself (not via its root): its partitions' changes then arrive under their own
names, present and future partitions alike, and are routed to the stream like wal2json's.

The publication must exist before the slot is created: decoding reads it as of each change, and
a change older than the publication would end the stream with "publication does not exist".
"""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import extensions, sql

from tap_postgres.config import Config
from tap_postgres.errors import NotSupportedError, ReplicationError

LOGGER = logging.getLogger("tap-postgres")

PUBLISHED_ACTIONS = "insert, update, delete, truncate"

# Each table, or each partition of a partitioned table, whose UPDATEs and DELETEs the server
# would reject once published: no replica identity (none set, or the default without a primary
# key, or an identity index that is gone).
_WITHOUT_IDENTITY_SQL = """
SELECT n.nspname, c.relname
  FROM unnest(%(schemas)s::text[], %(tables)s::text[]) AS wanted(nspname, relname)
  JOIN pg_namespace wn ON wn.nspname = wanted.nspname
  JOIN pg_class w ON w.relnamespace = wn.oid AND w.relname = wanted.relname
 CROSS JOIN LATERAL (SELECT w.oid UNION SELECT relid FROM pg_partition_tree(w.oid)) AS tree(relid)
  JOIN pg_class c ON c.oid = tree.relid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND (c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
        OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
 ORDER BY 1, 2
"""

# What the publication publishes now: whether it publishes every action the tap needs as the
# tables themselves, and its tables (only as whole tables: a row filter or a column list drops changes).
_PUBLICATION_SQL = """
SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate AND NOT p.pubviaroot AND NOT p.puballtables,
       coalesce((SELECT json_agg(json_build_array(n.nspname, c.relname))
                   FROM pg_publication_rel r
                   JOIN pg_class c ON c.oid = r.prrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE r.prpubid = p.oid), '[]'),
       (SELECT count(*) FROM pg_publication_rel r
         WHERE r.prpubid = p.oid AND (to_jsonb(r)->>'prqual' IS NOT NULL OR to_jsonb(r)->>'prattrs' IS NOT NULL)),
       to_regclass('pg_catalog.pg_publication_namespace') IS NOT NULL
  FROM pg_publication p
 WHERE p.pubname = %(name)s
"""


def ensure_publication(conn: extensions.connection, config: Config, name: str, tables: list[tuple[str, str]]) -> None:
    """Make the publication hold exactly `tables`, or raise a one-line error naming the statement to run."""
    _refuse_tables_without_identity(conn, tables)
    wanted = sorted(tables)
    statement = _statement_needed(conn, name, wanted)
    if statement is None:
        return
    text = statement.as_string(conn)
    if not config.create_replication_slot:
        raise ReplicationError(
            f'publication "{name}" does not hold exactly the LOG_BASED tables: run {text} '
            '(or set "create_replication_slot": true to let the tap do it)'
        )
    LOGGER.info("Setting publication %s to the LOG_BASED tables: %s", name, text)
    try:
        with conn.cursor() as cur:
            # the one write the tap makes besides the slot: sessions are read-only unless asked
            cur.execute("SET TRANSACTION READ WRITE")
            cur.execute(statement)
        conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        reason = str(exc).strip().splitlines()[0]
        raise ReplicationError(
            f'cannot set publication "{name}": {reason}: run {text} as the tables\' owner or a superuser'
        ) from None


def _refuse_tables_without_identity(conn: extensions.connection, tables: list[tuple[str, str]]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            _WITHOUT_IDENTITY_SQL,
            {"schemas": [schema for schema, _ in tables], "tables": [table for _, table in tables]},
        )
        missing = cur.fetchall()
    conn.rollback()
    if missing:
        names = ", ".join(sql.Identifier(*pair).as_string(conn) for pair in missing)
        raise NotSupportedError(
            f"{names} has no replica identity (no primary key): in a publication the server would reject its "
            "UPDATEs and DELETEs, so pgoutput cannot read it. Give it a primary key or REPLICA IDENTITY FULL, "
            "or sync it with FULL_TABLE or INCREMENTAL"
        )


def _statement_needed(conn: extensions.connection, name: str, wanted: list[tuple[str, str]]) -> sql.Composed | None:
    """Return the CREATE or ALTER PUBLICATION that makes it hold exactly `wanted`, or None when it does."""
    with conn.cursor() as cur:
        cur.execute(_PUBLICATION_SQL, {"name": name})
        row = cur.fetchone()
        schemas_published = False
        if row is not None and row[3]:
            cur.execute(
                "SELECT count(*) FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid "
                "WHERE p.pubname = %s",
                (name,),
            )
            schemas_published = cur.fetchone()[0] > 0
    conn.rollback()
    table_list = sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in wanted)
    options = sql.SQL("(publish = {}, publish_via_partition_root = false)").format(sql.Literal(PUBLISHED_ACTIONS))
    if row is None:
        return sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH {}").format(sql.Identifier(name), table_list, options)
    publishes_right, members, filtered, _ = row
    if publishes_right and not filtered and not schemas_published and {tuple(m) for m in members} == set(wanted):
        return None
    return sql.SQL("ALTER PUBLICATION {name} SET TABLE {tables}; ALTER PUBLICATION {name} SET {options}").format(
        name=sql.Identifier(name), tables=table_list, options=options
    )
