"""Sync orchestration: order the selected streams, reset stale bookmarks, run each stream's method."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg2

from tap_postgres import locks
from tap_postgres.catalog import SelectedStream
from tap_postgres.config import Config
from tap_postgres.connection import connect, database_identity, describe_sync_failure
from tap_postgres.discovery import describe_stream_tables
from tap_postgres.errors import InterruptedRunError, TapPostgresError
from tap_postgres.inflight import IN_FLIGHT, Interrupted
from tap_postgres.mapping import mapped_writer
from tap_postgres.metrics import register_streams
from tap_postgres.output import MessageWriter
from tap_postgres.state import (
    Origin,
    StreamBookmark,
    bookmark,
    check_bookmark,
    claim_bookmarks,
    reset_on_method_change,
    set_currently_syncing,
)
from tap_postgres.sync.batch_output import copy_output
from tap_postgres.sync.fast_sync_rds import sync_fast_rds
from tap_postgres.sync.full_table import copy_full_table
from tap_postgres.sync.helper_sessions import HelperSessions
from tap_postgres.sync.incremental import sync_incremental
from tap_postgres.sync.oversize import naming_oversize_values
from tap_postgres.sync.preflight import check_streams
from tap_postgres.sync.rows import CopySettings, selected_columns
from tap_postgres.sync.stream import StreamSync

if TYPE_CHECKING:  # imported by the runs that have LOG_BASED streams (a fast start for the others)
    from tap_postgres.sync.logical import LogBasedSync

LOGGER = logging.getLogger("tap-postgres")


def sync_streams(
    config: Config, streams: list[SelectedStream], state: dict, writer: MessageWriter, state_path: str | None = None
) -> None:
    """Sync every selected stream, the one named by `currently_syncing` first, writing STATE as it goes.

    LOG_BASED streams get their SCHEMA and, when new, their initial copy in that order; their
    changes are read afterwards in one pass over the WAL for all of them, during which the state
    file at `state_path` is read again now and then: what the target saved there is confirmed.
    """
    for stream in streams:
        reset_on_method_change(state, stream.tap_stream_id, stream.replication_method, stream.replication_key)
        check_bookmark(stream.tap_stream_id, bookmark(state, stream.tap_stream_id))
    log_based = [stream for stream in streams if stream.replication_method == "LOG_BASED"]

    register_streams(streams)  # the replication_method tag of each stream's METRIC lines
    writer = mapped_writer(writer, config)  # singer-sdk's mapper, only when maps are configured
    logical = None
    if log_based:
        from tap_postgres.sync.logical import LogBasedSync
    try:
        # closing(), not the connection's own `with`: that ends a transaction, which fails on a lost connection
        with locks.watching(config), contextlib.closing(connect(config, secondary=config.use_secondary)) as conn:
            # everything a run needs is checked before any copy or slot confirmation: where the
            # state belongs, the slot, the REPLICATION privilege and the state's WAL positions,
            # then the tables and the state's keys
            others = [stream.tap_stream_id for stream in streams if stream.replication_method != "LOG_BASED"]
            claim_bookmarks(state, others, Origin(*database_identity(conn)))
            with _failing_with_state("catalog", state, writer):
                tables = describe_stream_tables(conn, streams)

            def check_run() -> None:
                with _failing_with_state("catalog", state, writer):
                    check_streams(conn, config, streams, tables, state)

            # the LOG_BASED state's own checks, then every stream's, then the slot and publication DDL
            IN_FLIGHT.now_doing("LOG_BASED")  # a lock wait in its checks or publication DDL is named so
            logical = LogBasedSync(config, log_based, state, writer, state_path) if log_based else None
            check_run()
            if logical is not None:
                logical.open_slot()
                logical.check_replicable(tables)
                streams = logical.follow_schema_changes(tables, streams)
                logical.confirm_saved_position()
            helpers = HelperSessions(lambda: connect(config, secondary=config.use_secondary), config.connect_timeout)
            run = _Run(conn, tables, state, writer, config, CopySettings.of(config, streams), logical, helpers)
            for stream in resume_order(streams, state.get("currently_syncing")):
                set_currently_syncing(state, stream.tap_stream_id)
                table = (stream.schema_name, stream.table_name)
                with _failing_with_state(stream.tap_stream_id, state, writer, table):
                    _sync_stream(run, stream)
            set_currently_syncing(state, None)
            if logical:
                with _failing_with_state("LOG_BASED", state, writer):
                    logical.stream_changes(tables)
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        LOGGER.warning("Interrupted: writing the last STATE; rerun with it to resume")
        try:
            writer.write_state(state)
        except BrokenPipeError:
            # Ctrl-C on `tap | target`: the target often dies first
            raise InterruptedRunError(
                f"interrupted by {signal.Signals(signum).name}, and stdout was closed by the program reading it, "
                "so the last STATE could not be written: rerun with the state the target saved last",
                signum,
            ) from None
        raise InterruptedRunError(
            f"interrupted by {signal.Signals(signum).name}: the last STATE was written; rerun with it to resume",
            signum,
        ) from None
    finally:
        if logical:
            logical.close()
    writer.write_state(state)


@contextlib.contextmanager
def _failing_with_state(
    name: str, state: dict, writer: MessageWriter, table: tuple[str, str] | None = None
) -> Iterator[None]:
    """Write the last STATE before a failure the user can act on ends the run, so a rerun resumes.

    A database error the user can act on becomes one line naming `name` (describe_sync_failure);
    any other is a bug in the tap and keeps its traceback. The state in memory only ever holds
    bookmarks whose records were written, so it is safe to write at any point. `name` and `table`
    are also what a line about a lock wait names.
    """
    before = IN_FLIGHT.now_doing(name, table)
    try:
        yield
    except psycopg2.Error as exc:
        failure = describe_sync_failure(exc, name)
        if failure is None:
            raise
        writer.write_state(state)
        raise failure from None
    except TapPostgresError:
        writer.write_state(state)
        raise
    finally:
        IN_FLIGHT.now_doing(*before)


def resume_order(streams: list[SelectedStream], currently_syncing: str | None) -> list[SelectedStream]:
    """Put the stream an interrupted run was syncing first, then the rest in stream id order."""
    first = [stream for stream in streams if stream.tap_stream_id == currently_syncing]
    if currently_syncing and not first:
        LOGGER.warning("currently_syncing stream %s is not selected; ignoring it", currently_syncing)
    return first + [stream for stream in streams if stream.tap_stream_id != currently_syncing]


@dataclasses.dataclass
class _Run:
    """What syncing each stream of a run needs: the session, the tables, the state, the output, the settings."""

    conn: psycopg2.extensions.connection
    tables: dict
    state: dict
    writer: MessageWriter
    config: Config
    settings: CopySettings
    logical: LogBasedSync | None
    helpers: HelperSessions


def _sync_stream(run: _Run, stream: SelectedStream) -> None:
    conn, state, writer, config, settings = run.conn, run.state, run.writer, run.config, run.settings
    table = run.tables[(stream.schema_name, stream.table_name)]  # check_streams made sure it is there
    if not table.populated:
        LOGGER.warning(
            "Skipping %s: materialized view %s has not been populated (created WITH NO DATA); run "
            "REFRESH MATERIALIZED VIEW on it to sync it",
            stream.tap_stream_id,
            f'"{table.schema_name}"."{table.name}"',
        )
        return
    columns = selected_columns(table, stream)
    LOGGER.info("Syncing %s with %s", stream.tap_stream_id, stream.replication_method)
    if stream.replication_method == "LOG_BASED":
        writer.write_schema(stream.tap_stream_id, run.logical.schema_of(stream), stream.key_properties)
        if run.logical.needs_copy(stream):
            with (
                naming_oversize_values(conn, stream, columns),
                copy_output(writer, config, stream, columns) as copy_writer,
            ):
                run.logical.copy(table, stream, columns, copy_writer)
        return
    bookmark_properties = [stream.replication_key] if stream.replication_key else None
    value_limit = settings.value_limit_of(stream)
    schema = value_limit.nullable_schema(stream.schema, columns) if value_limit else stream.schema
    # fast_sync_rds targets read the SCHEMA too: it tells them the columns of the exported CSV
    writer.write_schema(stream.tap_stream_id, schema, stream.key_properties, bookmark_properties)
    bookmark_of_stream = StreamBookmark(state, stream.tap_stream_id)
    sync = StreamSync(conn, table, stream, columns, bookmark_of_stream, writer, settings, run.helpers)
    if config.fast_sync_rds:
        sync_fast_rds(sync, config)
        return
    with naming_oversize_values(conn, stream, columns), copy_output(writer, config, stream, columns) as copy_writer:
        if stream.replication_method == "FULL_TABLE":
            copy_full_table(dataclasses.replace(sync, writer=copy_writer))
        else:
            sync_incremental(dataclasses.replace(sync, writer=copy_writer))
