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
