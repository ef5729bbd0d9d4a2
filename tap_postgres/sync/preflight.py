"""Checks before any row is read: each selected table is there and readable, and the state fits it.

A problem found here ends the run before anything is copied or the replication slot is moved,
with one line naming the stream, the cause and the fix, instead of failing hours into a run.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.discovery import Column, Table, quote_ident
from tap_postgres.errors import PrivilegeError, StateError, TableMissingError
from tap_postgres.state import bookmark, shown
from tap_postgres.sync.rows import key_values, selected_columns

# SQLSTATEs of a value that is not one of its column's: bad text or out of range (class 22), a
# domain's constraint (class 23), a JSON type with no cast to the column's type
_NOT_A_VALUE_CLASSES = ("22", "23")
_NOT_A_VALUE = ("42846", "42804", "42883")


def check_streams(
    conn: extensions.connection,
    config: Config,
    streams: list[SelectedStream],
    tables: dict[tuple[str, str], Table],
    state: dict,
) -> None:
    """Raise a one-line error for the first selected stream that cannot be synced as the state says."""
    for stream in streams:
        table = tables.get((stream.schema_name, stream.table_name))
        if table is None:
            raise TableMissingError(
                f'table "{stream.schema_name}"."{stream.table_name}" of stream {stream.tap_stream_id} no longer '
                "exists: rerun --discover and update the catalog"
            )
        columns = selected_columns(table, stream)
        _check_privileges(table, stream, columns, config.user)
        _check_key_values(conn, table, stream, columns, bookmark(state, stream.tap_stream_id))


def _check_privileges(table: Table, stream: SelectedStream, columns: list[Column], user: str) -> None:
    if not table.schema_usable:
        raise PrivilegeError(
            f"{stream.tap_stream_id}: user {quote_ident(user)} lacks USAGE on schema {quote_ident(table.schema_name)}: "
            f"run GRANT USAGE ON SCHEMA {quote_ident(table.schema_name)} TO {quote_ident(user)}"
        )
    unreadable = [column.name for column in columns if not column.selectable]
    if unreadable:
        raise PrivilegeError(
            f"{stream.tap_stream_id}: user {quote_ident(user)} lacks SELECT on column(s) "
            f"{', '.join(quote_ident(name) for name in unreadable)} of {table.qualified_name}: "
            f"run GRANT SELECT ON {table.qualified_name} TO {quote_ident(user)}, or deselect them in the catalog"
        )


def _check_key_values(conn, table: Table, stream: SelectedStream, columns: list[Column], saved: dict) -> None:
    """Ask the server whether the bookmark's key values are values of their columns' types."""
    if stream.replication_key and saved.get("replication_key_value") is not None:
        key_column = next(column for column in columns if column.name == stream.replication_key)
        _check_values(conn, stream, "replication_key_value", [key_column], [saved["replication_key_value"]])
    resume_key = saved.get("resume_key")
    key_columns = [column for name in table.primary_key for column in table.columns if column.name == name]
    if resume_key is None or not key_columns or not all(types.is_comparable(c.type) for c in key_columns):
        return  # no key ranges: the copy starts over whatever the resume key says
    if len(resume_key) != len(key_columns):
        raise StateError(
            f'{stream.tap_stream_id}: the state\'s "resume_key" {shown(resume_key)} has {len(resume_key)} values, '
            f"the primary key of {table.qualified_name} has {len(key_columns)} columns: remove resume_key and "
            "snapshot_xmin from the stream's bookmark to copy the table again"
        )
    _check_values(conn, stream, "resume_key", key_columns, resume_key)


def _check_values(conn, stream: SelectedStream, name: str, columns: list[Column], values: list) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT {}").format(key_values(columns, values)))
    except psycopg2.Error as exc:
        if not (exc.pgcode or "").startswith(_NOT_A_VALUE_CLASSES) and exc.pgcode not in _NOT_A_VALUE:
            raise
        reason = str(exc).strip().splitlines()[0]
        raise StateError(
            f'{stream.tap_stream_id}: the state\'s "{name}" {shown(values if name == "resume_key" else values[0])} '
            f"does not fit column(s) {', '.join(quote_ident(c.name) for c in columns)}: {reason}; fix it, or remove "
            "the stream's bookmark from the state to sync it anew"
        ) from None
    finally:
        conn.rollback()
