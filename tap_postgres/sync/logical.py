"""LOG_BASED: copy each new stream, then read the slot's WAL once, for every LOG_BASED stream together.

No change is lost because of three rules:
- a stream's `lsn` bookmark only moves to the end of a transaction (or to an idle keepalive
  position) once every record before it has been written, and the STATE carrying it follows them;
- the slot is confirmed only up to the lowest `lsn` of the incoming state, which is what the
  target has saved (replication.confirm_up_to), never to what this run emits;
- a stream being copied skips exactly the transactions its copy's snapshot already saw; every
  later transaction is streamed, so rows written during the copy arrive (at least once). The
  copy's first STATE, before any of its rows, already holds that snapshot (`copy_snapshot`) and
  an `lsn` no later than any transaction it did not see: a target that saves only that STATE
  resumes the copy, and the changes since it (deletes of rows it already loaded included) follow.
"""

from __future__ import annotations

import dataclasses
import decimal
import logging
import select
import time
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import extensions, sql

from tap_postgres import types
from tap_postgres.catalog import SelectedStream, log_based_properties
from tap_postgres.config import Config
from tap_postgres.connection import connect, connect_replication, database_identity, describe_sync_failure
from tap_postgres.discovery import RELATION_KINDS, Column, Table, describe_tables
from tap_postgres.errors import NotSupportedError, OversizeValueError, ReplicationError, StateError, TableMissingError
from tap_postgres.files import PolledJsonFile
from tap_postgres.output import MessageWriter
from tap_postgres.publication import creation_statements, ensure_publication, membership_tokens
from tap_postgres.replication import (
    confirm_up_to,
    current_wal_lsn,
    describe_plugin_failure,
    find_slot,
    locate_slot,
    log_slot_health,
    wait_until_free,
    younger_publication_error,
)
from tap_postgres.server_versions import pgoutput_protocol
from tap_postgres.state import (
    MEMBERSHIP_KEY,
    Origin,
    StreamBookmark,
    bookmark,
    bookmark_lsn,
    claim_bookmarks,
    int_to_lsn,
    saved_position,
    shown,
)
from tap_postgres.sync.changes import (
    IN_ORDER,
    NEW_COLUMNS,
    BatchRenderer,
    ChangeOptions,
    StreamChanges,
    log_based_schema,
    with_new_columns,
)
from tap_postgres.sync.decoders import Change, PgoutputDecoder, Wal2jsonDecoder
from tap_postgres.sync.full_table import copy_full_table, new_version
from tap_postgres.sync.helper_sessions import HelperSessions
from tap_postgres.sync.local_render import TIME_SETTINGS, times_pinned
from tap_postgres.sync.rows import CopySettings, Progress, RecordSink, selected_columns
from tap_postgres.sync.schema_changes import COLUMNS_KEY, copy_reason, key_renamed, recorded_columns, retyped_columns
from tap_postgres.sync.stream import StreamSync

LOGGER = logging.getLogger("tap-postgres")

# Views, materialized views and foreign tables: their rows are not written to the WAL as theirs.
NOT_REPLICABLE = ("v", "m", "f")
# A STATE follows at the first transaction end after this many changes or seconds.
STATE_EVERY_CHANGES = 20000
STATE_EVERY_SECONDS = 10.0
# Within a transaction, every stream's pending changes are sent to render after this many changes.
PENDING_CHANGES = 20000
# How long to wait on the socket before checking the stop conditions again.
POLL_SECONDS = 1.0
# How long a change read may wait in the tap before its record is written to stdout: a steady load
# never leaves the run idle, and a STATE comes only every STATE_EVERY_SECONDS.
FLUSH_SECONDS = 0.2
# psycopg2 answers the server's keepalives itself; this is how often it reports on its own.
STATUS_INTERVAL_SECONDS = 10


@dataclasses.dataclass(frozen=True)
class CopySnapshot:
    """The snapshot an initial copy read (pg_current_snapshot), to tell which transactions it holds."""

    xmin: int
    xmax: int
    running: frozenset[int]
    lsn: int  # the WAL position read in the snapshot: every transaction ending later is unseen

    @classmethod
    def parse(cls, text: str, lsn: int) -> CopySnapshot:
        """Read `xmin:xmax:xip,...`."""
        xmin, xmax, running = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(xid) for xid in running.split(",") if xid), lsn)

    @classmethod
    def from_bookmark(cls, stream_id: str, saved: Any) -> CopySnapshot:
        """Read the `copy_snapshot` a stream's bookmark keeps while its initial copy is not yet passed."""
        try:
            return cls.parse(saved["snapshot"], int(saved["lsn"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StateError(
                f'{stream_id}: the state\'s "copy_snapshot" is {shown(saved)}, not {{"snapshot": "xmin:xmax:xip", '
                '"lsn": n}: restore the state file the target saved'
            ) from None

    def to_bookmark(self) -> dict:
        """Return the form kept in the state."""
        running = ",".join(str(xid) for xid in sorted(self.running))
        return {"snapshot": f"{self.xmin}:{self.xmax}:{running}", "lsn": self.lsn}

    def saw(self, xid: int) -> bool:
        """Tell whether a committed transaction, by its 32-bit xid from wal2json, was visible to the copy."""
        full = (self.xmax & ~0xFFFFFFFF) | xid  # give the xid the snapshot's epoch
        if full > self.xmax + (1 << 31):
            full -= 1 << 32
        if full < self.xmin:
            return True
        return full < self.xmax and full not in self.running


class LogBasedSync:
    """The LOG_BASED part of a run: the slot check, the initial copies, then the WAL pass."""

    def __init__(
        self,
        config: Config,
        streams: list[SelectedStream],
        state: dict,
        writer: MessageWriter,
        state_path: str | None = None,
    ):
        self.config = config
        self.streams = streams
        self.state = state
        self.writer = writer
        self.copy_settings = CopySettings.of(config, streams)
        self.times_pinned = False  # open_slot reads it from the walsender
        self.helpers = HelperSessions(lambda: connect(config), config.connect_timeout)
        # re-read during the WAL pass: the target's saved position
        self.state_file = PolledJsonFile(state_path, "state", parse_float=decimal.Decimal) if state_path else None
        # the slot, the copies' snapshots and the WAL position must all come from the primary
        self.conn = connect(config)
        # a state from another pipeline is refused before its slot or publication is touched
        self.recorded_slots = _recorded_slots(state)
        slot_name, _ = locate_slot(self.conn, config, self.recorded_slots)
        self.origin = Origin(*database_identity(self.conn), slot=slot_name)
        claim_bookmarks(state, [stream.tap_stream_id for stream in streams], self.origin)
        self.saved_positions = {
            stream.tap_stream_id: lsn
            for stream in streams
            if (lsn := bookmark_lsn(state, stream.tap_stream_id)) is not None
        }
        for stream_id, lsn in self.saved_positions.items():
            saved = StreamBookmark(state, stream_id)
            saved.set_lsn(lsn)  # an `X/Y` text is written back as pipelinewise's int
            saved.ensure_version(new_version())  # records carry one, even from a state without
        self.copy_snapshots: dict[str, CopySnapshot] = {
            stream.tap_stream_id: CopySnapshot.from_bookmark(stream.tap_stream_id, saved)
            for stream in streams
            if (saved := bookmark(state, stream.tap_stream_id).get("copy_snapshot")) is not None
        }
        self._refuse_positions_from_elsewhere()

    def open_slot(self) -> None:
        """Check the replication connection, then find (or create) the slot and prepare its plugin.

        The caller runs every check of the run first (every stream's), after this object's own
        checks of the state, so a refused run changes nothing: a dropped table gets "rerun
        --discover", never a statement naming it.
        """
        config = self.config
        # the REPLICATION attribute, pg_hba and no pooler between, before hours of copying; self.conn
        # holds no transaction first: through a pooler, that would keep the check waiting for a server connection
        self.conn.rollback()
        replication = connect_replication(config)
        # how the walsender prints values: its startup options pin it, and its ParameterStatus says so
        self.times_pinned = times_pinned({name: replication.get_parameter_status(name) for name in TIME_SETTINGS})
        replication.close()
        self.slot = find_slot(self.conn, config, self._prepare_plugin, self._publication_steps, self.recorded_slots)

    def _prepare_plugin(self, plugin: str, slot_name: str) -> None:
        """Make pgoutput's publication hold the LOG_BASED tables, or check one the tap did not make (wal2json needs nothing)."""
        if plugin == "pgoutput":
            pairs = [(stream.schema_name, stream.table_name) for stream in self.streams]
            # a view or a foreign table cannot be published: say so as LOG_BASED does for wal2json
            self.check_replicable({(t.schema_name, t.name): t for t in describe_tables(self.conn, tables=pairs)})
            held = {stream_id for stream_id, _ in self.held_positions()}
            # a run without any LOG_BASED bookmark is not this pipeline's state: it removes nothing
            known = held or any("lsn" in saved for saved in self.state["bookmarks"].values())
            ensure_publication(
                self.conn,
                self.config,
                self.publication_name(slot_name),
                slot_name,
                pairs,
                kept=lambda table: not known or f"{table[0]}-{table[1]}" in held,
            )
            self._copy_again_what_left(self.publication_name(slot_name), pairs)

    def _copy_again_what_left(self, publication: str, tables: list[tuple[str, str]]) -> None:
        """Copy anew, under a new version, each stream whose table left the publication since its bookmark.

        Each bookmark records its table's membership token (publication.membership_tokens). A
        different one in the same publication means the table was out of it for a while: pgoutput
        skipped its changes of that window for good, so streaming on from the bookmark would
        silently lack them. Another publication (one made again, or another publication_name) is
        younger than the slot, which the WAL pass refuses with a line of its own.
        """
        tokens = membership_tokens(self.conn, publication, tables)
        for stream in self.streams:
            saved = bookmark(self.state, stream.tap_stream_id)
            token = tokens[(stream.schema_name, stream.table_name)]
            recorded = saved.get(MEMBERSHIP_KEY)
            if _left_and_came_back(recorded, token) and saved.get("lsn") is not None:
                LOGGER.warning(
                    "%s: its table left publication %s since the last run and is back, so pgoutput skipped its "
                    "changes in between: copying it anew under a new version",
                    stream.tap_stream_id,
                    publication,
                )
                self._forget_position(stream.tap_stream_id)
            if token is not None:
                StreamBookmark(self.state, stream.tap_stream_id).set(MEMBERSHIP_KEY, token)

    def _forget_position(self, stream_id: str) -> None:
        """Make the stream's next copy an initial one, from a snapshot of its own, as if it were new.

        The version stays: the copy takes a new one and activates it at its end, as a rerun does.
        """
        StreamBookmark(self.state, stream_id).forget_position()
        self.saved_positions.pop(stream_id, None)
        self.copy_snapshots.pop(stream_id, None)

    def follow_schema_changes(
        self, tables: dict[tuple[str, str], Table], streams: list[SelectedStream]
    ) -> list[SelectedStream]:
        """Compare each LOG_BASED stream's recorded columns with its table as it is now (schema_changes.py).

        A stream whose changes cannot carry what changed is copied again under a new version,
        then its changes are read from its bookmark, all of them, deletes included; one whose key
        column was renamed (its older changes name no row), or whose initial copy was unfinished,
        is copied anew from a snapshot. Returns `streams` with each LOG_BASED one as this run
        syncs it: with the table's columns the catalog does not know yet, and the SCHEMA of a
        retyped column following its type.
        """
        followed = {}
        for stream in self.streams:
            table = tables[(stream.schema_name, stream.table_name)]
            owner = StreamBookmark(self.state, stream.tap_stream_id)
            saved = owner.saved
            recorded = saved.get(COLUMNS_KEY)
            reason = copy_reason(recorded, table)
            if reason and saved.get("lsn") is not None:
                if (
                    self.needs_copy(stream)
                    or stream.tap_stream_id in self.copy_snapshots
                    or key_renamed(recorded, table)
                ):
                    LOGGER.warning("%s: %s since the last run: copying it anew", stream.tap_stream_id, reason)
                    self._forget_position(stream.tap_stream_id)
                else:
                    LOGGER.warning(
                        "%s: %s since the last run: copying it again under a new version, then reading its changes "
                        "from its bookmark",
                        stream.tap_stream_id,
                        reason,
                    )
                    owner.copy_again(max(new_version(), (saved.get("version") or 0) + 1))
            followed[stream.tap_stream_id] = self._as_table_is(stream, table, recorded)
            owner.set(COLUMNS_KEY, recorded_columns(table))
        self.streams = list(followed.values())
        return [followed.get(stream.tap_stream_id, stream) for stream in streams]

    def _as_table_is(self, stream: SelectedStream, table: Table, recorded: Any) -> SelectedStream:
        """Return the stream with the table's new columns, and its retyped columns' SCHEMA following their types."""
        names = [column.name for column in table.columns]
        widened, _ = with_new_columns(
            stream, table, names, selected_columns(table, stream), log_based_properties(self.config)
        )
        retyped = [
            (column, before) for column, before in retyped_columns(recorded, table) if column.name in widened.columns
        ]
        if not retyped:
            return widened
        properties = dict(widened.schema["properties"])
        for column, before in retyped:
            nullable = not (column.not_null or column.name in table.primary_key)
            properties[column.name] = types.json_schema(column.type, nullable=nullable)
            LOGGER.info(
                '%s: column "%s" changed type from %s to %s: its SCHEMA follows',
                stream.tap_stream_id,
                column.name,
                before,
                column.placement.type_text,
            )
        return dataclasses.replace(widened, schema={**widened.schema, "properties": properties})

    def held_positions(self) -> list[tuple[str, int]]:
        """The `lsn` of this slot's LOG_BASED bookmarks whose streams the run does not select.

        Such a stream has not left the pipeline (a partial catalog, say): its table stays in the
        publication and the slot is never confirmed past its bookmark, so its changes wait for it.
        It leaves for good when its bookmark is removed from the state.
        """
        selected = {stream.tap_stream_id for stream in self.streams}
        held = []
        for stream_id, saved in self.state["bookmarks"].items():
            origin = saved.get("origin")
            slot = origin.get("slot") if isinstance(origin, dict) else None
            if stream_id in selected or slot not in (None, self.origin.slot):
                continue
            try:
                lsn = bookmark_lsn(self.state, stream_id)
            except StateError:
                continue  # not this run's to judge: it is not selected
            if lsn is not None:
                held.append((stream_id, lsn))
        return held

    def _publication_steps(self, slot_name: str) -> str | None:
        """The statements that create pgoutput's publication for the LOG_BASED tables, or None when it exists."""
        pairs = [(stream.schema_name, stream.table_name) for stream in self.streams]
        return creation_statements(self.conn, self.publication_name(slot_name), slot_name, self.config.tap_id, pairs)

    def publication_name(self, slot_name: str) -> str:
        """The publication pgoutput reads: publication_name, else the slot's name."""
        return self.config.publication_name or slot_name

    def _refuse_positions_from_elsewhere(self) -> None:
        """Refuse a state whose WAL positions or copy snapshots this server has not reached.

        They cannot come from this server's slot: confirming the slot up to such a position would
        release changes nobody read, and the stream would skip every change until then.
        """
        with self.conn.cursor() as cur:
            cur.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint, pg_snapshot_xmax(pg_current_snapshot())::text")
            end, next_xid = cur.fetchone()
        self.conn.rollback()
        for stream in self.streams:
            lsn = self.saved_positions.get(stream.tap_stream_id, 0)
            snapshot = self.copy_snapshots.get(stream.tap_stream_id)
            if lsn > end or (snapshot and (snapshot.lsn > end or snapshot.xmax > int(next_xid))):
                raise StateError(
                    f'{stream.tap_stream_id}: the state\'s "lsn" or "copy_snapshot" is beyond the server\'s current WAL '
                    f"position {int_to_lsn(end)}: the state is not from this server's slot; restore the state the "
                    "target saved, or remove the stream's bookmark to copy it anew"
                )

    def confirm_saved_position(self) -> None:
        """Confirm the slot up to the lowest position the state holds: the target has saved what is before it."""
        for stream_id, lsn in self.held_positions():
            LOGGER.warning(
                "%s is not selected but the state holds its LOG_BASED bookmark: the slot is held at %s so its "
                "changes wait for it; remove its bookmark from the state if it has left the pipeline",
                stream_id,
                int_to_lsn(lsn),
            )
        if self.saved_positions:
            self.slot = confirm_up_to(self.conn, self.slot, self.confirmable(min(self.saved_positions.values())))
        log_slot_health(self.conn, self.slot, self.config, "start")
        for stream in self.streams:
            lsn = self.saved_positions.get(stream.tap_stream_id)
            if lsn is not None and lsn < self.slot.confirmed_flush:
                LOGGER.warning(
                    "%s: the slot was confirmed up to %s, past this stream's bookmark %s: changes in between "
                    "were released by an earlier run and cannot be read again",
                    stream.tap_stream_id,
                    int_to_lsn(self.slot.confirmed_flush),
                    int_to_lsn(lsn),
                )

    def confirmable(self, lsn: int) -> int:
        """Return how far the slot may be confirmed toward `lsn`: never past a held bookmark."""
        return min([lsn, *(held for _, held in self.held_positions())])

    def close(self) -> None:
        """Release the primary connection."""
        self.conn.close()

    def check_replicable(self, tables: dict[tuple[str, str], Table]) -> None:
        """Refuse a LOG_BASED stream on a relation that has no WAL of its own (a view, a foreign table)."""
        for stream in self.streams:
            table = tables.get((stream.schema_name, stream.table_name))
            if table is not None and table.kind in NOT_REPLICABLE:
                raise NotSupportedError(
                    f"{stream.tap_stream_id} is a {RELATION_KINDS[table.kind]}, whose rows have no WAL of their "
                    "own: LOG_BASED cannot replicate it; set its replication-method to FULL_TABLE or INCREMENTAL"
                )

    def schema_of(self, stream: SelectedStream) -> dict:
        """Return the SCHEMA of a LOG_BASED stream."""
        return log_based_schema(stream, self.config.debug_lsn)

    def needs_copy(self, stream: SelectedStream) -> bool:
        """Tell whether the stream has no WAL position yet, or its initial copy was interrupted."""
        current = bookmark(self.state, stream.tap_stream_id)
        return current.get("lsn") is None or "resume_key" in current or "xmin" in current

    def copy(
        self, table: Table, stream: SelectedStream, columns: list[Column], writer: MessageWriter | None = None
    ) -> None:
        """Copy the table with the FULL_TABLE engine, recording the WAL position its snapshot matches.

        `writer` takes the copy's output (a BatchWriter); the run's writer when None.
        """
        current = bookmark(self.state, stream.tap_stream_id)
        fresh = current.get("lsn") is None

        def record_position(cur: extensions.cursor) -> None:
            # read in the copy's snapshot: the transactions it saw are in the copy, the rest is
            # streamed from a position no later than any of them (the slot's, which the last run
            # read past, or the current one). The write position, which this run's WAL pass is sure
            # to reach, so copy_snapshot leaves the state at its end; an asynchronous commit the
            # snapshot saw that ends past it is at worst emitted again.
            cur.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint, pg_current_snapshot()::text")
            lsn, snapshot_text = cur.fetchone()
            snapshot = CopySnapshot.parse(snapshot_text, lsn)
            self.copy_snapshots[stream.tap_stream_id] = snapshot
            StreamBookmark(self.state, stream.tap_stream_id).begin_initial_copy(
                min(lsn, self.slot.confirmed_flush), snapshot.to_bookmark()
            )
            LOGGER.info("%s: initial copy, then changes after %s", stream.tap_stream_id, int_to_lsn(lsn))

        bookmark_of_stream = StreamBookmark(self.state, stream.tap_stream_id)
        sync = StreamSync(
            self.conn,
            table,
            stream,
            columns,
            bookmark_of_stream,
            writer or self.writer,
            self.copy_settings,
            self.helpers,
        )
        copy_full_table(sync, on_snapshot=record_position if fresh else None)

    def stream_changes(self, tables: dict[tuple[str, str], Table]) -> None:
        """Read the WAL from the lowest bookmark and emit every selected table's changes."""
        self.conn.rollback()
        # renders read current rows (TOAST values), and hold no snapshot or lock between batches
        self.conn.commit_each_statement = True
        wal_pass = WalPass(self, tables)
        wal_pass.run()


class WalPass:
    """One pass over the slot: wal2json messages in, RECORDs and STATE out."""

    def __init__(self, sync: LogBasedSync, tables: dict[tuple[str, str], Table]):
        self.sync = sync
        self.config = sync.config
        self.state = sync.state
        self.writer = sync.writer
        self.progress = Progress("LOG_BASED", self.config.progress_seconds, behind=self._behind_wal_end)
        self.replication_cursor = None  # the walsender's cursor: its wal_end is where the server's WAL ends
        self.decoder = PgoutputDecoder() if sync.slot.plugin == "pgoutput" else Wal2jsonDecoder()
        self.sink = RecordSink(self.writer, self.progress, sync.copy_settings.value_limit)
        change_options = ChangeOptions(
            sync.slot.plugin,
            self.config.debug_lsn,
            sync.copy_settings.value_limit,
            sync.times_pinned,
            self.config.render_changes_in_tap,
        )
        self.by_table: dict[tuple[str, str], StreamChanges] = {}
        for stream in sync.streams:
            table = tables.get((stream.schema_name, stream.table_name))
            if table is None:
                raise TableMissingError(
                    f'table "{stream.schema_name}"."{stream.table_name}" of stream {stream.tap_stream_id} no longer '
                    "exists: rerun --discover and update the catalog"
                )
            if not table.primary_key:
                LOGGER.warning(
                    "%s has no primary key: its deletes and key changes cannot be identified, and unchanged "
                    "large values of its updates cannot be read back; give it one",
                    stream.tap_stream_id,
                )
            version = bookmark(self.state, stream.tap_stream_id).get("version")
            self.by_table[(stream.schema_name, stream.table_name)] = StreamChanges(
                stream, table, selected_columns(table, stream), version, change_options
            )
        # wal2json names the leaf partition a row is in: the partitioned tables' changes are routed
        # to their streams through pg_partition_ancestors, with no table filter (see _route)
        self.partitioned = any(changes.table.kind == "p" for changes in self.by_table.values())
        self.routes: dict[tuple[str, str], list[StreamChanges]] = {}
        self.catalog_conn: extensions.connection | None = None
        self.bookmarks = {
            stream.tap_stream_id: bookmark_lsn(self.state, stream.tap_stream_id) for stream in sync.streams
        }
        self.position = min(self.bookmarks.values())  # the end of the last transaction read, or a keepalive's
        self.start_position = self.position
        self.confirmed = sync.slot.confirmed_flush  # what the slot is confirmed up to
        self.last_poll = time.monotonic()
        self.in_transaction = False
        self.skipped: set[str] = set()
        self.warned: set[str] = set()
        self.stopping: str | None = None  # why the pass ends at the next transaction end
        self.changes_since_state = 0
        self.started = self.last_state = self.last_data = self.last_flush = time.monotonic()
        self.unwritten = False  # changes read whose records may not be on stdout yet
        # b"I" or b"U" and a relation's oid, as a pgoutput change starts: the stream its whole rows go to
        self.whole_rows: dict[bytes, StreamChanges] = {}
        self.plugin_options = self._plugin_options()  # before the renderer shares self.sync.conn

    def run(self) -> None:
        """Stream until a stop condition holds, then render what is pending and write the last STATE."""
        end_lsn = current_wal_lsn(self.sync.conn)
        start_lsn = min(self.bookmarks.values())
        LOGGER.info(
            "Reading slot %s from %s to %s for %d streams",
            self.sync.slot.name,
            int_to_lsn(start_lsn),
            int_to_lsn(end_lsn) if self.config.break_at_end_lsn else "(no end)",
            len(self.by_table),
        )
        helper = connect(self.config)
        helper.commit_each_statement = True
        self.renderer = BatchRenderer([self.sync.conn, helper], self.sink)
        try:
            while (saved := self._stream(start_lsn, end_lsn)) is not None:
                start_lsn = self._confirm_between_streams(saved)
            self._checkpoint(drain=True, write=False)
        except psycopg2.Error as exc:
            failure = describe_sync_failure(exc, "LOG_BASED")
            if failure is not None:
                raise failure from None
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if self.sync.slot.plugin == "pgoutput" and "does not exist" in first_line:
                doing = f'cannot read replication slot "{self.sync.slot.name}"'
                raise describe_plugin_failure(exc, doing, "pgoutput", self.sync.slot.name) from None
            raise ReplicationError(
                f"LOG_BASED stopped: {first_line}: rerun with the last STATE to go on from there"
            ) from None
        finally:
            self.renderer.close()
            helper.close()
            if self.catalog_conn is not None:
                self.catalog_conn.close()
        self.progress.finish(self.sink)
        # after the walsender is gone, so the slot shows what this run confirmed
        log_slot_health(self.sync.conn, self.sync.slot, self.config, "end")

    def _stream(self, start_lsn: int, end_lsn: int) -> int | None:
        """Read the slot from `start_lsn` on one replication connection until the run should stop (None),
        or until the target has saved more than the slot is confirmed for (that position)."""
        replication = connect_replication(self.config)
        try:
            cur = self.replication_cursor = replication.cursor()
            try:
                cur.start_replication_expert(
                    start_replication_command(self.sync.slot.name, start_lsn, self.plugin_options).as_string(cur),
                    decode=False,
                    status_interval=STATUS_INTERVAL_SECONDS,
                )
            except psycopg2.Error as exc:
                raise describe_plugin_failure(
                    exc,
                    f'cannot read replication slot "{self.sync.slot.name}"',
                    self.sync.slot.plugin,
                    self.sync.slot.name,
                ) from None
            return self._read(cur, end_lsn)
        finally:
            replication.close()

    def _behind_wal_end(self) -> tuple[int, float] | None:
        """Return how far the position read is behind the server's WAL end: bytes, and seconds at the rate read so far."""
        wal_end = self.replication_cursor.wal_end if self.replication_cursor is not None else 0
        if not wal_end:
            return None  # the server has not said yet
        behind = max(0, wal_end - self.position)
        read_per_second = (self.position - self.start_position) / max(time.monotonic() - self.started, 1e-3)
        return behind, (behind / read_per_second if read_per_second > 0 else 0.0 if not behind else float("inf"))

    def _confirm_between_streams(self, saved: int) -> int:
        """Confirm the slot up to what the target saved while no walsender holds it; return where to read on.

        Not by a status update on the replication connection: once psycopg2 has been told a flush
        position it reports the walsender's own position on a keepalive whenever the last message
        it received started before that position, which a transaction begun earlier and committed
        later does; that could confirm transactions the target has not saved. Reading on from
        `saved` sends again what came after it, which every stream skips (its bookmark is past it).
        """
        conn = self._side_connection()
        wait_until_free(conn, self.sync.slot)
        self.sync.slot = confirm_up_to(conn, self.sync.slot, self.sync.confirmable(saved))
        self.confirmed = saved
        LOGGER.info(
            "Confirmed slot %s up to %s, what the target has saved",
            self.sync.slot.name,
            int_to_lsn(self.sync.slot.confirmed_flush),
        )
        return saved

    def _side_connection(self) -> extensions.connection:
        """A session of its own for catalog lookups and the slot, apart from the rendering sessions."""
        if self.catalog_conn is None:
            self.catalog_conn = connect(self.config)
            self.catalog_conn.commit_each_statement = True
        return self.catalog_conn

    def _plugin_options(self) -> dict[str, str]:
        if self.decoder.plugin == "pgoutput":
            name = self.sync.publication_name(self.sync.slot.name)
            return {
                # 2 streams large transactions, 3 two-phase, 4 in parallel: none is asked for, so any
                # version the server speaks reads the same messages; the highest it speaks is taken
                "proto_version": str(pgoutput_protocol(self.sync.conn.server_version)),
                "publication_names": sql.Identifier(name).as_string(self.sync.conn),
            }
        options = {
            "format-version": "2",  # one message per row change: memory does not grow with a transaction
            "include-xids": "true",
            "include-timestamp": "true",
            "include-lsn": "true",
            "include-types": "false",
            "actions": "insert,update,delete,truncate",
        }
        if not self.partitioned:
            # a partition attached during the run would not be in this list: only without partitioned tables
            options["add-tables"] = ",".join(
                f"{_escape(schema)}.{_escape(table)}" for schema, table in sorted(self.by_table)
            )
        return options

    def _read_message(self, cur):
        """Return the walsender's next message, or None; a change wal2json cannot write as JSON is one line."""
        try:
            return cur.read_message()
        except psycopg2.errors.ProgramLimitExceeded:
            if self.sync.slot.plugin != "wal2json":
                raise
            raise OversizeValueError(
                f"LOG_BASED: wal2json on the server cannot write a change after {int_to_lsn(self.position)} as "
                "JSON: a value in it is too long (a change over 1 GB, SQLSTATE 54000), and wal2json cannot leave a "
                f'value out: drop the slot "{self.sync.slot.name}" and rerun with output_plugin "pgoutput", '
                "create_replication_slot true, max_value_bytes set and the LOG_BASED bookmarks removed from the "
                'state, which copies those streams anew (README, "Moving from wal2json to pgoutput")'
            ) from None

    def _read(self, cur, end_lsn: int) -> int | None:
        """Consume messages until the run should stop (None) or the target saved more than is confirmed."""
        last_keepalive_request = 0.0
        while True:
            message = self._read_message(cur)
            if message is not None:
                self._consume(message.payload, message.data_start)
                if self.stopping and not self.in_transaction:
                    LOGGER.warning("%s: ending the run here; the next one copies the stream again", self.stopping)
                    return None
                if self.changes_since_state and not self.in_transaction and self._state_due():
                    self._checkpoint()
                    if (saved := self._saved_by_the_target()) is not None:
                        return saved
                if self.unwritten and time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                    self._flush(wait=False)
                continue
            if not self.in_transaction:
                # a keepalive's position: every transaction ending before it has been sent
                self.position = max(self.position, cur.wal_end)
            now = time.monotonic()
            if self._should_stop(now, end_lsn):
                self._refuse_skipped_publication()  # while the walsender's warnings can still be read
                return None
            # idle: send what is pending after a quiet second, and let bookmarks follow keepalives
            quiet = self.changes_since_state and now - self.last_data >= POLL_SECONDS
            if not self.in_transaction and (quiet or (self._state_due() and self._bookmarks_behind())):
                self._checkpoint(drain=True)
            if not self.in_transaction and (saved := self._saved_by_the_target()) is not None:
                return saved
            timeout = POLL_SECONDS
            if self.unwritten:
                timeout = FLUSH_SECONDS - (time.monotonic() - self.last_flush)
                if timeout <= 0:
                    self._flush(wait=True)  # nothing to read: wait for the renders in flight
                    timeout = POLL_SECONDS
            ready, _, _ = select.select([cur], [], [], timeout)
            if not ready and now - last_keepalive_request >= POLL_SECONDS:
                cur.send_feedback(reply=True, force=True)  # ask for a keepalive: it carries the WAL end
                last_keepalive_request = now

    def _saved_by_the_target(self) -> int | None:
        """Every state_poll_seconds, return how far the state file says the target saved, when past the slot.

        None when there is nothing new. A file that cannot be what the target saved of this run (a
        bookmark of another origin, an `lsn` past what this run emitted) is ignored with a warning,
        never followed: a file from elsewhere cannot release changes. Before it is returned every pending change is written, so all
        the streams' bookmarks are at the position read.
        """
        now = time.monotonic()
        if self.sync.state_file is None or now - self.last_poll < self.config.state_poll_seconds:
            return None
        self.last_poll = now
        try:
            saved = saved_position(self.sync.state_file.read(), self.bookmarks, self.sync.origin)
        except StateError as exc:
            self._warn_once(f"{exc}; the state file is ignored until it holds a state of this run")
            return None
        if saved is None or saved <= self.confirmed:
            return None
        self._checkpoint(drain=True)
        return saved

    def _warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            LOGGER.warning("%s", message)

    def _should_stop(self, now: float, end_lsn: int) -> bool:
        if self.config.break_at_end_lsn and not self.in_transaction and self.position >= end_lsn:
            LOGGER.info("Reached %s, the end of the WAL when the run started", int_to_lsn(end_lsn))
            return True
        if now - self.started >= self.config.max_run_seconds:
            LOGGER.info("Stopping after max_run_seconds (%d s)", self.config.max_run_seconds)
            return True
        if now - self.last_data >= self.config.logical_poll_total_seconds:
            LOGGER.info(
                "Stopping: no change for logical_poll_total_seconds (%d s)", self.config.logical_poll_total_seconds
            )
            return True
        return False

    def _consume(self, payload: bytes, data_start: int) -> None:
        # the common case first: a pgoutput insert or update carrying only its whole new row, of a
        # table whose last such change was rendered here (see _learn_whole_rows), read in one loop
        changes = self.whole_rows.get(payload[:5]) if self.whole_rows else None
        if changes is not None and payload[5] == 0x4E and changes.stream.tap_stream_id not in self.skipped:
            if changes.add_whole_tuple(payload, self.decoder.lsn):
                self._added(changes)
                return
        change = self.decoder.decode(payload)
        if change is None:
            if payload[:1] == b"R":
                self.whole_rows.clear()  # a relation described anew may have other columns or another name
            return
        action = change.action
        if action == "B":
            self.in_transaction = True
            self.skipped = self._already_emitted(change.xid, change.end)
        elif action == "C":
            self.in_transaction = False
            self.position = max(self.position, data_start)  # the end of the commit record
        elif action in ("I", "U", "D"):
            route = self.routes.get(change.relations[0])  # per change: the common case without a call
            if route is None:
                route = self._routed(change.relations[0])
            for changes in route:
                if changes.stream.tap_stream_id in self.skipped:
                    continue
                layout = changes.layout_of(change)
                if layout == NEW_COLUMNS:
                    self._take_new_columns(changes, change)
                    layout = changes.layout_of(change, described=True)
                changes.add(change, layout)
                self._added(changes)
                if layout == IN_ORDER and change.whole_row and len(route) == 1:
                    self._learn_whole_rows(payload, changes)
        elif action == "T":
            for relation in change.relations:
                self._truncate(relation, data_start)

    def _added(self, changes: StreamChanges) -> None:
        """Count a change just queued, and hand batches to the renderer when they are due."""
        self.last_data = time.monotonic()
        self.changes_since_state += 1
        self.unwritten = True
        if changes.full:
            self.renderer.submit(changes.take_batches())
        elif not self.changes_since_state % PENDING_CHANGES:
            self._submit_pending()

    def _learn_whole_rows(self, payload: bytes, changes: StreamChanges) -> None:
        """Send the table's next whole-row inserts and updates down _consume's fast path, which renders them
        into `changes` as the general path just did: they then differ from this change only in their values.

        Only where the table's changes go to this stream alone and every value is taken as sent (no
        bytea, which pgoutput prints with a prefix). Forgotten when any relation is described anew
        and when the stream's columns change.
        """
        if changes.reads_whole_tuples and self.decoder.takes_texts_as_sent(payload):
            relid = payload[1:5]
            self.whole_rows[b"I" + relid] = self.whole_rows[b"U" + relid] = changes

    def _submit_pending(self) -> None:
        """Hand every stream's pending changes to the renderer, so that a transaction over many tables holds
        at most PENDING_CHANGES of them, not tables x BATCH_CHANGES (a STATE waits for its end anyway)."""
        for changes in self.by_table.values():
            self.renderer.submit(changes.take_batches())

    def _truncate(self, relation: tuple[str, str], position: int) -> None:
        """Start a new table version for each stream of a truncated table, so a target that honours it empties it.

        The changes before the TRUNCATE are written under the old version, those after it under
        the new one, which ACTIVATE_VERSION (queued behind them) makes the only live one. A
        partition truncated under a partitioned table's stream cannot be said that way.
        """
        for changes in self._routed(relation):
            stream_id = changes.stream.tap_stream_id
            if stream_id in self.skipped:
                continue
            if relation != (changes.table.schema_name, changes.table.name):
                LOGGER.warning(
                    "Partition %s.%s of %s was truncated at %s: LOG_BASED cannot say that to the target, which still "
                    "holds its rows: delete them there too, or resync the stream",
                    *relation,
                    stream_id,
                    int_to_lsn(position),
                )
                continue
            self.renderer.submit(changes.take_batches())
            changes.version = max(new_version(), (changes.version or 0) + 1)
            LOGGER.info(
                "%s was truncated at %s: its records now carry table version %d, activated at once",
                stream_id,
                int_to_lsn(position),
                changes.version,
            )

            def activate(stream_id: str = stream_id, version: int = changes.version) -> None:
                StreamBookmark(self.state, stream_id).set_version(version)
                self.writer.write_activate_version(stream_id, version)

            self.renderer.submit_checkpoint(activate)

    def _routed(self, relation: tuple[str, str]) -> list[StreamChanges]:
        """Return the streams a table's changes belong to, looked up once per table (see `_route`)."""
        route = self.routes.get(relation)
        if route is None:
            route = self.routes[relation] = self._route(relation)
        return route

    def _route(self, relation: tuple[str, str]) -> list[StreamChanges]:
        """Return the streams a table's changes belong to: its own, and those of the partitioned tables above it."""
        own = self.by_table.get(relation)
        if not self.partitioned:
            return [own] if own else []
        with self._side_connection().cursor() as cur:
            # pg_partition_ancestors lists the table itself first, then each parent up to the root
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_partition_ancestors(("
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s)) AS a(relid) "
                "JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace",
                relation,
            )
            related = [self.by_table[row] for row in cur.fetchall() if row in self.by_table]
        return related or ([own] if own else [])

    def _already_emitted(self, xid: int, end: int) -> set[str]:
        """Return the streams that already hold a transaction ending at `end`, which must skip it."""
        skipped = set()
        for stream_id, lsn in self.bookmarks.items():
            snapshot = self.sync.copy_snapshots.get(stream_id)
            if end <= lsn or (snapshot is not None and snapshot.saw(xid)):
                skipped.add(stream_id)
        return skipped

    def _take_new_columns(self, changes: StreamChanges, change: Change) -> None:
        """Render what is pending under the old columns, then describe the table again and emit its SCHEMA."""
        self.whole_rows.clear()
        self.renderer.submit(changes.take_batches())
        self.renderer.drain()  # describe_tables below shares the first session
        stream = changes.stream
        described = describe_tables(self.sync.conn, tables=[(stream.schema_name, stream.table_name)])
        if not described:
            raise TableMissingError(
                f'table "{stream.schema_name}"."{stream.table_name}" of stream {stream.tap_stream_id} was dropped or '
                "renamed while its changes were being read: rerun --discover and update the catalog"
            )
        reason = copy_reason(bookmark(self.state, stream.tap_stream_id).get(COLUMNS_KEY), described[0])
        if reason and self.stopping is None:
            # the next run copies the stream again (LogBasedSync.follow_schema_changes): end this one soon
            self.stopping = f"{stream.tap_stream_id}: {reason} while its changes were being read"
        widened, columns = with_new_columns(
            stream, described[0], change.names, changes.columns, log_based_properties(self.config)
        )
        changes.stream = widened
        changes.adopt(described[0], columns, change.names)
        if widened is not stream:
            self.writer.write_schema(stream.tap_stream_id, self.sync.schema_of(widened), stream.key_properties, None)

    def _flush(self, wait: bool) -> None:
        """Hand every pending change to the renderer and write to stdout what is rendered; `wait` for the rest too.

        Records only: a STATE still waits for its transaction's end and for STATE_EVERY_*.
        """
        for changes in self.by_table.values():
            self.renderer.submit(changes.take_batches())
        if wait:
            self.renderer.drain()
        else:
            self.renderer.write_ready()
        self.writer.flush()
        self.unwritten = self.renderer.holding
        self.last_flush = time.monotonic()

    def _state_due(self) -> bool:
        return (
            self.changes_since_state >= STATE_EVERY_CHANGES or time.monotonic() - self.last_state >= STATE_EVERY_SECONDS
        )

    def _bookmarks_behind(self) -> bool:
        return any(lsn < self.position for lsn in self.bookmarks.values())

    def _refuse_skipped_publication(self) -> None:
        """Stop where pgoutput read changes before the publication existed, before any of them is written.

        PostgreSQL 18 skips a publication missing at a change's point in the WAL with a WARNING
        ('skipped loading publication') and reads on without the changes it would have published,
        where 13 to 17 stop with an error: the same line as theirs, and no bookmark moves past the
        changes lost. psycopg2 files the walsender's warnings in `notices` only when polled.
        """
        if self.replication_cursor is None or self.sync.slot.plugin != "pgoutput":
            return
        replication = self.replication_cursor.connection
        if not replication.closed:
            replication.poll()  # libpq keeps the stream's data: only notices are taken
        for notice in replication.notices:
            if "skipped loading publication" in notice:
                cause = notice.split("\n", 1)[0].removeprefix("WARNING:").strip()
                doing = f'cannot read replication slot "{self.sync.slot.name}"'
                raise younger_publication_error(
                    f"{doing}: {cause} (PostgreSQL 18 reads on without it)", self.sync.slot.name
                )

    def _checkpoint(self, drain: bool = False, write: bool = True) -> None:
        """Queue every pending change, then move each bookmark to the position read so far and write STATE.

        The bookmarks change in the state only once the records before them are written: an
        interrupted run then writes a state that its output covers. `drain` waits for that;
        `write=False` leaves the STATE to the caller (the run's last one is sync_streams').
        """
        self._refuse_skipped_publication()
        for changes in self.by_table.values():
            self.renderer.submit(changes.take_batches())
        position = self.position if not self.in_transaction else None

        def move_bookmarks() -> None:
            for stream_id, lsn in self.bookmarks.items() if position is not None else ():
                stream_bookmark = StreamBookmark(self.state, stream_id)
                if position > lsn:
                    self.bookmarks[stream_id] = position
                    stream_bookmark.set_lsn(position)
                snapshot = self.sync.copy_snapshots.get(stream_id)
                if snapshot is not None and position >= snapshot.lsn and "resume_key" not in stream_bookmark.saved:
                    # past the copy's position every unseen transaction ends later: the lsn rule suffices
                    del self.sync.copy_snapshots[stream_id]
                    stream_bookmark.pass_copy_snapshot()
            if write:
                self.writer.write_state(self.state)

        self.renderer.submit_checkpoint(move_bookmarks)
        if drain:
            self.renderer.drain()
        self.changes_since_state = 0
        self.last_state = time.monotonic()


def _left_and_came_back(recorded: str | None, token: str | None) -> bool:
    """Tell whether a table's membership token changed within the same publication (`<publication oid>:<member>`)."""
    if not isinstance(recorded, str) or token is None or recorded == token:
        return False
    return recorded.split(":", 1)[0] == token.split(":", 1)[0]


def _recorded_slots(state: dict) -> set[str] | None:
    """Return the slots the state's LOG_BASED bookmarks name in their origin, or None when it holds no `lsn` at all."""
    positions = [saved for saved in state["bookmarks"].values() if isinstance(saved, dict) and "lsn" in saved]
    if not positions:
        return None
    origins = [saved.get("origin") for saved in positions]
    return {origin["slot"] for origin in origins if isinstance(origin, dict) and isinstance(origin.get("slot"), str)}


def start_replication_command(slot_name: str, start_lsn: int, options: dict[str, str]) -> sql.Composed:
    """Return START_REPLICATION for a logical slot, its options quoted in the connection's encoding.

    Not psycopg2's start_replication: it quotes option values as Latin-1 whatever the connection's
    encoding, so a table named café in add-tables would match no table and its changes be dropped.
    """
    return sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
        sql.Identifier(slot_name),
        sql.SQL(int_to_lsn(start_lsn)),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()),
    )


def _escape(name: str) -> str:
    """Escape a schema or table name for wal2json's add-tables list.

    wal2json splits the list at commas and at any whitespace (tab and newline too), and reads a
    backslash as "the next character is part of the name"; every ASCII character other than a
    letter, a digit or `_` is escaped, which is always safe. Other characters are never special.
    """
    return "".join("\\" + char if char < "\x80" and not (char.isalnum() or char == "_") else char for char in name)
