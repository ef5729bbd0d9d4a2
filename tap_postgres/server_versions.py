"""The PostgreSQL versions the tap reads, and what differs between them, chosen from server_version_num."""

from __future__ import annotations

import psycopg2.extensions

from tap_postgres.errors import UnsupportedServerError

# 13 is the oldest major its community still supported when the tap's range was set; 12 lacks
# what LOG_BASED reads from pg_publication (pubviaroot came in 13)
LOWEST_SUPPORTED = 130000


def version_text(server_version: int) -> str:
    """Return a server_version_num as people write it: 120022 is 12.22."""
    return f"{server_version // 10000}.{server_version % 10000}"


def require_supported(conn: psycopg2.extensions.connection) -> None:
    """Close the session and raise UnsupportedServerError when its server is older than the tap reads."""
    if conn.server_version >= LOWEST_SUPPORTED:
        return
    found = version_text(conn.server_version)
    conn.close()
    raise UnsupportedServerError(
        f"PostgreSQL {found} is not supported: tap-postgres reads PostgreSQL {LOWEST_SUPPORTED // 10000} or later; "
        "upgrade the server"
    )


def pgoutput_protocol(server_version: int) -> int:
    """Return the highest pgoutput protocol version a server speaks: 2 from 14, 3 from 15, 4 from 16."""
    return 4 if server_version >= 160000 else 3 if server_version >= 150000 else 2 if server_version >= 140000 else 1


def has_failover_slots(server_version: int) -> bool:
    """Tell whether a logical slot can be a failover slot, synchronized to standbys (PostgreSQL 17)."""
    return server_version >= 170000


def publishes_generated_columns(server_version: int) -> bool:
    """Tell whether a publication can carry stored generated columns (publish_generated_columns, 18+)."""
    return server_version >= 180000


def function_body_sql(server_version: int, proc: str = "p") -> str:
    """Return the SQL of a function's body: from 14 a `BEGIN ATOMIC` or `RETURN` body is parsed
    (prosqlbody, printed by pg_get_function_sqlbody) and prosrc is empty."""
    if server_version >= 140000:
        return (
            f"CASE WHEN {proc}.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody({proc}.oid) ELSE {proc}.prosrc END"
        )
    return f"{proc}.prosrc"


def membership_options_sql(server_version: int, member: str = "am") -> str:
    """Return `inherit_option, set_option` of a pg_auth_members row: per grant from 16, unknown (null) before."""
    if server_version >= 160000:
        return f"{member}.inherit_option AS inherit_option, {member}.set_option AS set_option"
    return "NULL::boolean AS inherit_option, NULL::boolean AS set_option"


def range_statistics_sql(server_version: int, stats: str = "s") -> str:
    """Return pg_stats' `range_empty_frac` (17+, range columns only), null on older servers."""
    if server_version >= 170000:
        return f"{stats}.range_empty_frac::float8 AS range_empty_fraction"
    return "NULL::float8 AS range_empty_fraction"


def statement_usage_columns(server_version: int, stats: str = "s") -> dict[str, str]:
    """Return the SQL of what pg_stat_statements names differently by version (all supported servers have
    total_exec_time and total_plan_time, renamed from total_time in 13): `toplevel` (14+, else true),
    `since` (the entry's stats_since from 17, else null) and `reset` (pg_stat_statements_info.stats_reset
    from 14, else null: on 13 a reset is seen only as counters going down)."""
    if server_version >= 170000:
        since = f"{stats}.stats_since"
    else:
        since = "NULL::timestamptz"
    return {
        "toplevel": f"{stats}.toplevel" if server_version >= 140000 else "true",
        "since": since,
        "reset": "(SELECT stats_reset FROM {schema}.pg_stat_statements_info)"
        if server_version >= 140000
        else "NULL::timestamptz",
    }
