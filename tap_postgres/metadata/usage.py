"""Statement usage from pg_stat_statements as deltas of its counters between two runs.

The previous run's counters of each entry (role, query id, toplevel) are kept in STATE; the server
subtracts them from the current ones and renders the records. An entry counts from zero when it is
new, when its calls went down (evicted and re-added, or reset on 13), or when the whole view was
reset since (pg_stat_statements_info.stats_reset, 14+).
"""

from __future__ import annotations

import json
import logging

from tap_postgres import server_versions
from tap_postgres.metadata.streams import masked

LOGGER = logging.getLogger("tap-postgres")

COUNTERS = ("calls", "rows", "total_exec_time", "total_plan_time", "shared_blks_hit", "shared_blks_read")

_EXTENSION_SQL = """
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'
"""

_USAGE_SQL = """
WITH reset AS (SELECT {reset} AS at),
current AS (
    SELECT coalesce(r.rolname::text, s.userid::text) AS role, s.queryid::text AS query_id, {toplevel} AS toplevel,
           s.userid::text || '/' || s.queryid::text || '/' || {toplevel}::text AS entry, s.query, {since} AS since,
           s.calls, s.rows, s.total_exec_time, s.total_plan_time, s.shared_blks_hit, s.shared_blks_read
      FROM {schema}.pg_stat_statements s
      LEFT JOIN pg_roles r ON r.oid = s.userid
     WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.queryid IS NOT NULL),
previous AS (SELECT key AS entry, value FROM jsonb_each(%(previous_counters)s::jsonb)),
deltas AS (
    SELECT c.*, p.value IS NULL OR %(previous_reset)s::text IS DISTINCT FROM (SELECT at FROM reset)::text
               OR (p.value->>0)::bigint > c.calls AS from_zero, p.value
      FROM current c LEFT JOIN previous p USING (entry))
-- the times as text: a target that reads STATE numbers as decimals (singer-sdk) cannot write a fraction back
SELECT d.entry, jsonb_build_array(d.calls, d.rows, d.total_exec_time::text, d.total_plan_time::text,
                                  d.shared_blks_hit, d.shared_blks_read)::text,
       (SELECT at FROM reset)::text, statement_timestamp()::text,
       CASE WHEN d.from_zero OR d.calls > (d.value->>0)::bigint THEN
           %(prefix)s || row_to_json(record.*)::text || %(suffix)s END
  FROM deltas d
 CROSS JOIN LATERAL (
    SELECT current_database()::text AS database, d.role, d.query_id, d.toplevel,
           statement_timestamp() AS observed_to,
           CASE WHEN d.from_zero THEN coalesce(d.since, (SELECT at FROM reset))
                ELSE %(previous_observed)s::timestamptz END AS observed_from,
           d.from_zero AS counted_from_zero,
           {query} AS query,
           d.calls - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>0)::bigint END AS calls,
           d.rows - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>1)::bigint END AS rows,
           d.total_exec_time - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>2)::float8 END AS total_exec_time_ms,
           d.total_plan_time - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>3)::float8 END AS total_plan_time_ms,
           d.shared_blks_hit - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>4)::bigint END AS shared_blocks_hit,
           d.shared_blks_read - CASE WHEN d.from_zero THEN 0 ELSE (d.value->>5)::bigint END AS shared_blocks_read
 ) AS record
"""


def extension_schema(cur) -> str | None:
    """Return the schema pg_stat_statements is installed in, or None when it is not in this database."""
    cur.execute(_EXTENSION_SQL)
    row = cur.fetchone()
    return row[0] if row else None


def usage_query(server_version: int, schema: str) -> str:
    """Return the usage query for a server, reading pg_stat_statements from `schema`."""
    quoted = '"' + schema.replace('"', '""') + '"'
    columns = server_versions.statement_usage_columns(server_version, "s")
    return _USAGE_SQL.format(
        reset=columns["reset"].format(schema=quoted),
        toplevel=columns["toplevel"],
        since=columns["since"],
        schema=quoted,
        query=masked("d.query"),
    )


def read_usage(cur, server_version: int, schema: str, params: dict, saved: dict) -> tuple[list[bytes], dict]:
    """Return the RECORD lines of what changed since `saved` (this database's bookmark) and the new bookmark."""
    cur.execute(
        usage_query(server_version, schema),
        {
            **params,
            "previous_counters": json.dumps(
                saved.get("counters", {}), default=str
            ),  # numbers read from STATE are Decimal
            "previous_reset": saved.get("stats_reset"),
            "previous_observed": saved.get("observed_at"),
        },
    )
    rows = cur.fetchall()
    reset, observed_at = rows[0][2:4] if rows else (None, None)
    counters = {entry: json.loads(values) for entry, values, *_ in rows}
    lines = [line.encode() + b"\n" for *_, line in rows if line is not None]
    return lines, {"stats_reset": reset, "observed_at": observed_at, "counters": counters}
