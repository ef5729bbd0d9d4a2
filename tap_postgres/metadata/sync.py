"""Syncing the catalog streams: each database through its own session, a few at once, records rendered by the server.

Every snapshot stream gets one new table version per run covering all databases: ACTIVATE_VERSION
first (on its first run) and after the last database, so a target drops what disappeared. Statement
usage emits the deltas since the previous run's counters (tap_postgres.metadata.usage), which
its bookmark keeps per database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from tap_postgres import locks, server_versions
from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.connection import connect, describe_sync_failure
from tap_postgres.discovery import quote_ident
from tap_postgres.errors import InterruptedRunError, TapPostgresError
from tap_postgres.filters import Filters, database_conditions
from tap_postgres.inflight import Interrupted
from tap_postgres.metadata import lineage, usage
from tap_postgres.metadata.streams import BY_ID, KEPT, LINEAGE, STATEMENT_USAGE, MetadataStream, masked
from tap_postgres.output import MessageWriter, now_extracted, record_envelope
from tap_postgres.state import StreamBookmark
from tap_postgres.sync.full_table import new_version
from tap_postgres.sync.rows import Progress, RecordSink, begin_snapshot, copy_records

LOGGER = logging.getLogger("tap-postgres")

# at most this many databases are read at once, each through one session: a crawl must not take
# the server's connections from its applications
MAX_DATABASE_SESSIONS = 3
HMAC_BLOCK = 64  # SHA-256's block size

_EVERY_DATABASE_SQL = f"""
SELECT datname FROM pg_database
 WHERE NOT datistemplate AND datallowconn AND has_database_privilege(datname, 'CONNECT')
   AND {database_conditions("datname")}
 ORDER BY datname
"""

_LISTED_DATABASES_SQL = f"""
SELECT name FROM unnest(%(names)s::text[]) WITH ORDINALITY AS listed(name, position)
 WHERE {database_conditions("name")}
 ORDER BY position
"""

_READ_ALL_STATS_SQL = "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"


def is_metadata_stream(stream: SelectedStream) -> bool:
    """Tell whether a selected stream is one of the catalog streams."""
    return stream.tap_stream_id in BY_ID


def hmac_pads(key: str | None) -> tuple[bytes, bytes]:
    """Return HMAC-SHA256's inner and outer padded keys (K xor ipad, K xor opad) of `key`."""
    raw = (key or "").encode()
    if len(raw) > HMAC_BLOCK:
        raw = hashlib.sha256(raw).digest()
    raw = raw.ljust(HMAC_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in raw), bytes(b ^ 0x5C for b in raw)


@dataclasses.dataclass(frozen=True)
class _Pass:
    """One run's catalog streams: what every database's session needs to read them."""

    config: Config
    streams: list[MetadataStream]
    params: dict  # the filters' and the masking's bound parameters
    envelopes: dict[str, tuple[str, str]]  # each stream's RECORD envelope, with its version
    usage_bookmark: StreamBookmark  # statement_usage's: each database's counters
    writer: _LockedWriter
    skipped: dict  # (stream id, reason) -> databases, warned once at the end


class _LockedWriter:
    """Whole blocks of lines from several database sessions, written one block at a time."""

    def __init__(self, writer: MessageWriter):
        self._writer = writer
        self._lock = threading.Lock()

    def write_lines(self, block: bytes) -> None:
        """Write one block of whole lines, never interleaved with another session's."""
        with self._lock:
            self._writer.write_lines(block)


def metadata_databases(conn, config: Config) -> list[str]:
    """Return the databases the catalog streams read: the listed ones (or every connectable one), filtered."""
    params = Filters.of(config).params()
    listed = (config.metadata_databases or "").strip()
    with conn.cursor() as cur:
        if listed == "*":
            cur.execute(_EVERY_DATABASE_SQL, params)
        else:
            names = [name.strip() for name in listed.split(",") if name.strip()] or [config.dbname]
            cur.execute(_LISTED_DATABASES_SQL, {**params, "names": names})
        databases = [row[0] for row in cur.fetchall()]
    conn.rollback()
    return databases


def sync_metadata(config: Config, selected: list[SelectedStream], state: dict, writer: MessageWriter) -> None:
    """Sync the selected catalog streams of every database, then write STATE."""
    streams = [BY_ID[stream.tap_stream_id] for stream in selected]
    usage_bookmark = StreamBookmark(state, STATEMENT_USAGE.tap_stream_id)
    if STATEMENT_USAGE in streams:
        usage_bookmark.check_usage_counters()
    with contextlib.closing(connect(config)) as conn:
        Filters.of(config).check(conn)
        databases = metadata_databases(conn, config)
    LOGGER.info("Catalog streams: %d streams of %d databases (%s)", len(streams), len(databases), ", ".join(databases))
    extracted = now_extracted()
    envelopes, versions = {}, {}
    for stream in streams:
        writer.write_schema(stream.tap_stream_id, stream.schema, list(stream.key_properties))
        if stream.incremental:
            envelopes[stream.tap_stream_id] = record_envelope(stream.tap_stream_id, None, extracted)
            continue
        versions[stream.tap_stream_id] = version = new_version()
        first_run = StreamBookmark(state, stream.tap_stream_id).begin_snapshot(version)
        envelopes[stream.tap_stream_id] = record_envelope(stream.tap_stream_id, version, extracted)
        if first_run:
            writer.write_activate_version(stream.tap_stream_id, version)
    inner, outer = hmac_pads(config.metadata_hash_key)
    params = {
        **Filters.of(config).params(),
        "sql_text": config.metadata_sql_text,
        "hmac_inner": psycopg2.Binary(inner),
        "hmac_outer": psycopg2.Binary(outer),
    }
    run = _Pass(config, streams, params, envelopes, usage_bookmark, _LockedWriter(writer), {})
    try:
        # a lock wait is named and SIGTERM or Ctrl-C cancels every session's statement, as in a row sync
        with locks.watching(config), ThreadPoolExecutor(max_workers=MAX_DATABASE_SESSIONS) as pool:
            for future in [pool.submit(_sync_database, run, database) for database in databases]:
                future.result()
    except Interrupted as exc:
        writer.write_state(state)
        raise InterruptedRunError(
            f"interrupted by {signal.Signals(exc.signum).name}: the last STATE was written; rerun with it", exc.signum
        ) from None
    except TapPostgresError:
        # the usage counters of the databases read so far are in the state, with their records
        writer.write_state(state)
        raise
    for (stream_id, reason), names in sorted(run.skipped.items()):
        LOGGER.warning("%s in database(s) %s: %s", stream_id, ", ".join(sorted(names)), reason)
    for stream_id, version in versions.items():
        writer.write_activate_version(stream_id, version)
    if STATEMENT_USAGE not in streams:
        usage_bookmark.forget()
    writer.write_state(state)


def _sync_database(run: _Pass, database: str) -> None:
    """Read every selected catalog stream of one database through a session of its own."""
    config = dataclasses.replace(run.config, dbname=database)
    with contextlib.closing(connect(config)) as conn:
        begin_snapshot(conn)
        version = conn.server_version
        pieces = {
            "masked_view_definition": masked("CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END"),
            "masked_function_body": masked(
                f"CASE WHEN l.lanname IN ('internal', 'c') THEN NULL ELSE {server_versions.function_body_sql(version)} END"
            ),
        }
        for stream in run.streams:
            try:
                with conn.cursor() as cur:
                    cur.execute("SAVEPOINT metadata_stream")
                    _sync_stream(run, conn, cur, stream, database, pieces)
                    cur.execute("RELEASE SAVEPOINT metadata_stream")
            except psycopg2.errors.InsufficientPrivilege as exc:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK TO SAVEPOINT metadata_stream")
                reason = f"skipped: {exc.diag.message_primary}; it needs {stream.needs}"
                run.skipped.setdefault((stream.tap_stream_id, reason), set()).add(database)
            except psycopg2.Error as exc:
                failure = describe_sync_failure(exc, f"{stream.tap_stream_id} of database {database}")
                if failure is None:
                    raise
                raise failure from None
        conn.commit()


def _sync_stream(run: _Pass, conn, cur, stream: MetadataStream, database: str, pieces: dict) -> None:
    """Emit one catalog stream's records of the session's database."""
    stream_id = stream.tap_stream_id
    progress = Progress(f"{stream_id} of {database}", run.config.progress_seconds)
    if stream is STATEMENT_USAGE:
        _sync_usage(run, conn, cur, database)
        return
    params = dict(run.params)
    if stream is LINEAGE:
        params.update(lineage.lineage_params(cur, KEPT, params))
    query = cur.mogrify(stream.query(conn.server_version, **pieces), params).decode()
    sink = RecordSink(run.writer, progress)
    sink.copy(cur, copy_records(run.envelopes[stream_id], sql.SQL(query)))
    LOGGER.info("%s: %d records of database %s", stream_id, progress.rows, database)


def _sync_usage(run: _Pass, conn, cur, database: str) -> None:
    """Emit statement usage deltas of one database, and keep its counters in the bookmark."""
    schema = usage.extension_schema(cur)
    stream_id = STATEMENT_USAGE.tap_stream_id
    if schema is None:
        reason = (
            "skipped: the pg_stat_statements extension is not installed there (add it to shared_preload_libraries, "
            "CREATE EXTENSION pg_stat_statements, and GRANT pg_read_all_stats TO "
            f"{quote_ident(run.config.user)} to see every role's statements)"
        )
        run.skipped.setdefault((stream_id, reason), set()).add(database)
        return
    cur.execute(_READ_ALL_STATS_SQL)
    if not cur.fetchone()[0]:
        reason = (
            f"other roles' statement texts read <insufficient privilege>: user {quote_ident(run.config.user)} is not "
            f"a member of pg_read_all_stats (GRANT pg_read_all_stats TO {quote_ident(run.config.user)})"
        )
        run.skipped.setdefault((stream_id, reason), set()).add(database)
    saved = run.usage_bookmark.usage_counters(database)
    prefix, suffix = run.envelopes[stream_id]
    try:
        cur.execute("SAVEPOINT usage")
        lines, saved_now = usage.read_usage(
            cur, conn.server_version, schema, {**run.params, "prefix": prefix, "suffix": suffix}, saved
        )
    except psycopg2.errors.InsufficientPrivilege as exc:
        cur.execute("ROLLBACK TO SAVEPOINT usage")
        user = quote_ident(run.config.user)
        reason = (
            f"skipped: {exc.diag.message_primary} (GRANT SELECT ON {quote_ident(schema)}.pg_stat_statements TO {user})"
        )
        run.skipped.setdefault((stream_id, reason), set()).add(database)
        return
    except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
        cur.execute("ROLLBACK TO SAVEPOINT usage")
        reason = (
            f"skipped: {exc.diag.message_primary} (set shared_preload_libraries = 'pg_stat_statements' and restart)"
        )
        run.skipped.setdefault((stream_id, reason), set()).add(database)
        return
    if lines:
        run.writer.write_lines(b"".join(lines))
    run.usage_bookmark.record_usage_counters(database, saved_now)
    LOGGER.info("%s: %d records of database %s", stream_id, len(lines), database)
