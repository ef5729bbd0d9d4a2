"""Connections to PostgreSQL: the primary, the secondary (replica), every transaction read-only with pinned settings."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from tap_postgres.config import Config
from tap_postgres.errors import (
    AuthenticationError,
    ConnectionFailedError,
    DatabaseMissingError,
    ReplicationError,
    StreamSyncError,
    TableMissingError,
    TapPostgresError,
)
from tap_postgres.inflight import IN_FLIGHT
from tap_postgres.server_versions import require_supported

LOGGER = logging.getLogger("tap-postgres")

# Every value the tap emits is rendered by the server, so the settings that change how values
# are printed are pinned, for every transaction: timestamps in UTC and ISO form, intervals as
# ISO 8601 durations, floats with the shortest text that reads back exactly.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
# The walsender runs no transaction of the tap's: it gets the settings as startup options, read-only included.
READ_ONLY = {"default_transaction_read_only": "on"}


class TapConnection(psycopg2.extensions.connection):
    """A session whose every transaction is read-only from its first statement and carries the pinned settings.

    psycopg2 opens each transaction with `BEGIN ... READ ONLY` (set_session(readonly=True)), so a
    function a query reaches that turns the session's default_transaction_read_only off (a domain
    CHECK, a cast, a row policy) cannot make a later transaction writable. The settings are `SET
    LOCAL`, the transaction's first statement: they end with it, so a transaction-mode pooler
    (PgBouncer) that hands the server connection to another client hands it back unchanged, and a
    function cannot change them for the transactions after its own either. There is no autocommit:
    `commit_each_statement` runs each statement in a read-only transaction of its own instead.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cursor_factory = TapCursor
        self.commit_each_statement = False
        self.secondary = False  # a session to the replica: where the lock watcher must look
        self.transaction_start = set_local(SESSION_SETTINGS)
        super().set_session(readonly=True)

    @property
    def autocommit(self) -> bool:
        """Always False: an autocommit statement would run in a transaction the session's defaults decide."""
        return False

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        if value:
            raise TypeError("a TapConnection has no autocommit: set commit_each_statement instead")

    def set_session(self, **options) -> None:
        """Set the isolation level (or deferrable) of the transactions to come; they stay read-only."""
        if options.pop("readonly", True) is not True or options.pop("autocommit", False):
            raise TypeError("a TapConnection's transactions are read-only, never autocommit")
        super().set_session(readonly=True, **options)


class TapCursor(psycopg2.extensions.cursor):
    """A cursor of a TapConnection: it opens each transaction with the connection's `SET LOCAL`s."""

    def execute(self, query, vars=None):
        """Run a statement, opening its transaction first when none is open."""
        with self._in_transaction():
            return super().execute(query, vars)

    def copy_expert(self, sql, file, size=8192):
        """Run a COPY ... TO STDOUT, opening its transaction first when none is open."""
        with self._in_transaction():
            return super().copy_expert(sql, file, size)

    @contextlib.contextmanager
    def _in_transaction(self) -> Iterator[None]:
        conn = self.connection
        with IN_FLIGHT.statement(conn), self._transaction_of(conn):
            yield

    @contextlib.contextmanager
    def _transaction_of(self, conn: TapConnection) -> Iterator[None]:
        if conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            # psycopg2 sends BEGIN ... READ ONLY before it: the settings are the transaction's first statement
            super().execute(conn.transaction_start)
        if not conn.commit_each_statement:
            yield
            return
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def set_local(settings: dict[str, str]) -> str:
    """Return the `SET LOCAL` statements that give a transaction these settings."""
    return "".join(f"SET LOCAL {name} = '{value}';" for name, value in settings.items())


def startup_options(settings: dict[str, str]) -> str:
    """Return the libpq `options` value that sets these settings when the session starts."""
    # a space separates options; one inside a value is escaped with a backslash
    return " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}" for name, value in settings.items())


def connection_options(config: Config, *, secondary: bool = False) -> dict:
    """Return the libpq keyword arguments for the primary or the secondary server."""
    options = {
        "host": config.secondary_host if secondary else config.host,
        "port": config.secondary_port if secondary else config.port,
        "user": config.user,
        "dbname": config.dbname,
        "connect_timeout": config.connect_timeout,
        "application_name": config.application_name,
    }
    if config.password is not None:
        options["password"] = config.password
    if config.effective_sslmode:
        options["sslmode"] = config.effective_sslmode
    for key in ("sslrootcert", "sslcert", "sslkey"):
        if getattr(config, key):
            options[key] = getattr(config, key)
    return options


def connect(config: Config, *, secondary: bool = False) -> TapConnection:
    """Open a session whose transactions are read-only with the pinned settings, or raise a TapPostgresError."""
    options = connection_options(config, secondary=secondary)
    try:
        # no startup options: PgBouncer refuses those it does not know (ignore_startup_parameters)
        conn = psycopg2.connect(**options, connection_factory=TapConnection)
    except psycopg2.OperationalError as exc:
        raise describe_connect_failure(exc, options) from None
    require_supported(conn)  # libpq knows the version from the startup: no query
    conn.secondary = secondary
    conn.transaction_start += set_local({"lock_timeout": f"{config.lock_timeout}s"})
    _refuse_statement_pooling(conn, options)
    return conn


def _refuse_statement_pooling(conn: TapConnection, options: dict) -> None:
    """Run a first transaction, which a pooler in statement mode (PgBouncer) ends by closing the connection.

    libpq reports only "server closed the connection unexpectedly" then, wherever it happens: here
    it can be told apart, before any stream has begun.
    """
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.rollback()
    except psycopg2.OperationalError as exc:
        conn.close()
        first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConnectionFailedError(
            f"{options['host']}:{options['port']} closed the connection at its first transaction ({first_line}), "
            "as a connection pooler in statement mode does (PgBouncer's pool_mode = statement): the tap runs "
            "transactions of several statements; give its database pool_mode = transaction or session, or "
            "connect to the server directly"
        ) from None


def database_identity(conn: psycopg2.extensions.connection) -> tuple[str | None, int, str]:
    """Return the server's system identifier, the database's oid and its name: what a state belongs to.

    A physical standby and a promoted one share the primary's system identifier and oids. The
    identifier is None where pg_control_system() was revoked from the tap's user.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT oid, datname FROM pg_database WHERE datname = current_database()")
        oid, name = cur.fetchone()
        try:
            cur.execute("SELECT system_identifier::text FROM pg_control_system()")
            system_identifier = cur.fetchone()[0]
        except psycopg2.errors.InsufficientPrivilege:
            system_identifier = None
    conn.rollback()
    return system_identifier, oid, name


def connect_replication(config: Config) -> psycopg2.extras.LogicalReplicationConnection:
    """Open a logical replication connection to the primary, with the pinned settings as startup options.

    wal2json prints values with the walsender's own settings, so they are pinned there too: the
    text it sends then reads back into exactly the values FULL_TABLE renders. A pooler in between
    (PgBouncer) refuses the connection, or with `ignore_startup_parameters` makes it an ordinary
    session: IDENTIFY_SYSTEM tells, before anything is copied.
    """
    options = connection_options(config)
    try:
        conn = psycopg2.connect(
            **options,
            options=startup_options({**SESSION_SETTINGS, **READ_ONLY}),
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
        )
    except psycopg2.OperationalError as exc:
        if "replication" in str(exc).lower() and "superuser" in str(exc).lower():
            raise ReplicationError(
                f'user "{config.user}" may not read the WAL: run ALTER ROLE "{config.user}" WITH REPLICATION'
            ) from None
        if "unsupported startup parameter" in str(exc):
            raise _needs_direct_connection(options, str(exc)) from None
        raise describe_connect_failure(exc, options) from None
    require_supported(conn)
    try:
        with conn.cursor() as cur:
            cur.execute("IDENTIFY_SYSTEM")
            cur.fetchall()
    except psycopg2.errors.SyntaxError as exc:
        conn.close()
        raise _needs_direct_connection(options, f"IDENTIFY_SYSTEM: {exc}") from None
    return conn


def _needs_direct_connection(options: dict, answer: str) -> ReplicationError:
    """The error for a replication connection that reached a connection pooler instead of the server."""
    first_line = next((line.strip() for line in answer.splitlines() if line.strip()), answer)
    first_line = first_line.rsplit("FATAL:", 1)[-1].strip()  # libpq's "connection to server at ... failed"
    return ReplicationError(
        f"LOG_BASED needs a direct connection to PostgreSQL, and {options['host']}:{options['port']} is not "
        f"one for replication ({first_line}): a connection pooler such as PgBouncer cannot carry replication "
        'connections; point "host" and "port" at the server itself for the LOG_BASED streams'
    )


def describe_connect_failure(exc: psycopg2.Error, options: dict) -> TapPostgresError:
    """Turn a libpq connection error into a one-line error that names the cause and the fix."""
    where = f"{options['host']}:{options['port']}"
    message = str(exc).strip()
    text = message.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return AuthenticationError(
            f'PostgreSQL at {where} rejected user "{options["user"]}": password authentication failed; '
            'check "user" and "password" in the config'
        )
    if "role" in text and "does not exist" in text:
        return AuthenticationError(f'PostgreSQL at {where} has no user "{options["user"]}": check "user" in the config')
    if "database" in text and "does not exist" in text:
        return DatabaseMissingError(
            f'database "{options["dbname"]}" does not exist on {where}: check "dbname" in the config'
        )
    if "timeout expired" in text:
        return ConnectionFailedError(
            f"no answer from {where} within {options['connect_timeout']} s (connect_timeout): "
            'check "host", "port" and any firewall between'
        )
    if "connection refused" in text:
        return ConnectionFailedError(
            f'connection refused by {where}: is PostgreSQL running there, and are "host" and "port" right?'
        )
    if "could not translate host name" in text or "name or service not known" in text:
        return ConnectionFailedError(f'unknown host "{options["host"]}": check "host" in the config')
    if "does not support ssl" in text:
        return ConnectionFailedError(
            f'{where} does not accept SSL connections: set "ssl" to false or "sslmode" to "prefer"'
        )
    if "no pg_hba.conf entry" in text:
        return AuthenticationError(
            f'{where} does not allow user "{options["user"]}" from this address (pg_hba.conf): '
            "ask the database administrator to add an entry"
        )
    first_line = next((line for line in message.splitlines() if line.strip()), type(exc).__name__)
    return ConnectionFailedError(f"cannot connect to {where}: {first_line.strip()}")


# SQLSTATEs of failures during a sync that the user can act on, with what to do about each.
_SYNC_FAILURES = {
    "42501": "permission denied: GRANT SELECT on the table and USAGE on its schema to the tap's user, or deselect it",
    "57014": "the query was cancelled (statement_timeout, or pg_cancel_backend): raise statement_timeout for "
    "the tap's user (ALTER ROLE ... SET statement_timeout = 0) and rerun with the last STATE",
    "55000": "the server refused the query in its current state: if it is a materialized view created WITH NO "
    "DATA, run REFRESH MATERIALIZED VIEW on it; then rerun with the last STATE",
    "53100": "the server is out of disk space: free some and rerun with the last STATE",
    "53200": "the server is out of memory: rerun with the last STATE (a smaller itersize uses less)",
    "54000": "a value is too long for the server to render as JSON (a record over 1 GB): set max_value_bytes "
    "(for example 100000000) to emit null for such values with a warning, or deselect the column",
}
_RECOVERY_CONFLICT = (
    "the standby cancelled the query for a recovery conflict: set hot_standby_feedback = on (or raise "
    "max_standby_streaming_delay) on the standby, or read from the primary, then rerun with the last STATE"
)
_CONNECTION_LOST = "the connection to the server was lost: rerun with the last STATE to resume"


def describe_sync_failure(exc: psycopg2.Error, stream_id: str) -> TapPostgresError | None:
    """Turn a database error during a stream's sync into a one-line error, or None when it is not the user's to fix."""
    code = exc.pgcode or ""
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if code in ("42P01", "42703"):
        return TableMissingError(
            f"{stream_id}: {first_line}: the table or a column was dropped or renamed during the run; "
            "rerun --discover and update the catalog"
        )
    if code == "40001" and "recovery" in first_line:
        fix = _RECOVERY_CONFLICT
    elif code in _SYNC_FAILURES:
        fix = _SYNC_FAILURES[code]
    elif code.startswith(("08", "57P")) or (
        not code and isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
    ):
        fix = _CONNECTION_LOST
    else:
        return None
    return StreamSyncError(f"{stream_id}: {first_line}: {fix}")
