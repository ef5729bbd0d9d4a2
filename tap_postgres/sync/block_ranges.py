"""FULL_TABLE's engine: a heap table read in ranges of its blocks by N sessions on one exported snapshot.

A range `[a, b)` is every row whose ctid lies in blocks a to b-1: on PostgreSQL 14+ the server
reads it with a TID Range Scan (no index, no sort, each page read once). PostgreSQL 13 has no TID
Range Scan: the same condition is a filter on a scan of the whole table, once per range, which
costs a few percent of the rendering per range (measured on 13.23, 1M wide rows: 5.0 s of server
CPU in one pass, 5.3 s in 4 ranges, 5.6 s in 8, where a TID Scan of every tuple id the ranges'
blocks can hold took 7.9 s in 50). So there a copy takes at most SEQ_SCAN_RANGES_PER_SESSION
ranges per session, however large the table: a kill re-sends at most the ranges in flight, a
quarter of the table per session. Each range is one COPY rendered by the server into RECORD
lines, streamed through a buffer of SINK_FLUSH_BYTES per session into the shared output, so
memory stays bounded whatever the number of sessions and the width of the rows. As each range ends, STATE records it
(state.CopiedBlocks) and a rerun copies only the ranges not recorded. Lines of ranges in flight
interleave on stdout: rows arrive in no particular order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import psycopg2
from psycopg2 import extensions, sql

from tap_postgres.output import MessageWriter
from tap_postgres.state import CopiedBlocks, StreamBookmark
from tap_postgres.sync.rows import RecordQueries, RecordSink

LOGGER = logging.getLogger("tap-postgres")

# A partitioned parent's leaf partitions, or the table itself: each with its size in blocks, its
# file (a rewrite gives it a new one), its rows per block as far as the statistics know, and
# whether the tap may read its ctid (a grant on the parent does not reach a partition, nor a grant
# of some columns the ctid).
_RELATIONS_SQL = """
SELECT c.oid::regclass::text, n.nspname, c.relname, c.relkind,
       pg_relation_size(c.oid) / current_setting('block_size')::int,
       pg_relation_filenode(c.oid), CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages END,
       has_column_privilege(c.oid, 'ctid', 'SELECT')
  FROM pg_partition_tree(%(table)s::regclass) AS tree
  JOIN pg_class AS c ON c.oid = tree.relid
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE tree.isleaf
 ORDER BY c.oid::regclass::text
"""
_SINGLE_RELATION_SQL = """
SELECT c.oid::regclass::text, n.nspname, c.relname, c.relkind,
       pg_relation_size(c.oid) / current_setting('block_size')::int,
       pg_relation_filenode(c.oid), CASE WHEN c.relpages > 0 THEN c.reltuples / c.relpages END,
       has_column_privilege(c.oid, 'ctid', 'SELECT')
  FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE c.oid = %(table)s::regclass
"""
HEAP_KINDS = {"r", "m"}
# rows a block holds when the statistics have not counted it yet: 8 kB of rows of ~100 bytes
_GUESSED_ROWS_PER_BLOCK = 60
# Without a TID Range Scan (PostgreSQL 13) each range reads the whole table: this many ranges per
# session bound that to a few percent of the copy, and a kill to a quarter of the table per session.
SEQ_SCAN_RANGES_PER_SESSION = 4


@dataclasses.dataclass(frozen=True)
class Relation:
    """One heap relation a stream reads by block ranges: the table, or one leaf partition of it."""

    name: str  # regclass text, as STATE keys its copied blocks
    schema_name: str
    table_name: str
    blocks: int  # its size at the snapshot: no row the snapshot sees lies beyond
    filenode: int
    rows_per_block: float | None

    def blocks_per_range(self, rows_per_range: int) -> int:
        """Return the blocks of a range that holds about `rows_per_range` rows."""
        per_block = self.rows_per_block or _GUESSED_ROWS_PER_BLOCK
        return max(1, round(rows_per_range / max(per_block, 1.0)))


def heap_relations(cur: extensions.cursor, schema_name: str, table_name: str, kind: str) -> list[Relation] | None:
    """Return the heap relations that hold the table's rows, or None when some cannot be read by ranges.

    Read in the copy's snapshot: the sizes bound every row it sees. A partitioned table whose leaf
    is a foreign table, or a table whose ctid the tap may not read (a grant of some of its columns,
    or of a partitioned parent only), is copied in one pass.
    """
    qualified = sql.Identifier(schema_name, table_name).as_string(cur)
    cur.execute(_RELATIONS_SQL if kind == "p" else _SINGLE_RELATION_SQL, {"table": qualified})
    relations = []
    for name, schema, table, relkind, blocks, filenode, per_block, selectable in cur.fetchall():
        if relkind not in HEAP_KINDS or not selectable:
            LOGGER.info(
                "%s: %s cannot be read by block ranges (a foreign table, or no SELECT on its ctid)", qualified, name
            )
            return None
        relations.append(Relation(name, schema, table, blocks, filenode, per_block))
    return relations


def block_condition(start: int, end: int) -> sql.Composable:
    """Return the WHERE of the rows in blocks `start` to `end - 1` (a TID Range Scan on 14+, a filter on 13)."""
    return sql.SQL("source.ctid >= {}::tid AND source.ctid < {}::tid").format(
        sql.Literal(f"({start},0)"), sql.Literal(f"({end},0)")
    )


def copied_condition(copied: CopiedBlocks) -> sql.Composable:
    """Return the WHERE of the rows in the blocks `copied` holds (a filter: resumes read it once)."""
    parts = [
        sql.SQL("(source.ctid >= {}::tid AND source.ctid < {}::tid)").format(
            sql.Literal(f"({start},0)"), sql.Literal(f"({end},0)")
        )
        for start, end in copied.intervals()
    ]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("FALSE")


@dataclasses.dataclass(frozen=True)
class ServerBlocks:
    """What a server's version and block size say about reading block ranges."""

    tid_range_scan: bool  # PostgreSQL 14+

    @classmethod
    def of(cls, cur: extensions.cursor) -> ServerBlocks:
        """Ask the server."""
        cur.execute("SELECT current_setting('server_version_num')::int")
        return cls(cur.fetchone()[0] >= 140000)

    def blocks_per_range(self, relation: Relation, rows_per_range: int, sessions: int) -> int:
        """Return the blocks of each range of `relation`: about `rows_per_range` rows, fewer ranges without a TID Range Scan."""
        per_range = relation.blocks_per_range(rows_per_range)
        if self.tid_range_scan:
            return per_range
        return max(per_range, -(-relation.blocks // (SEQ_SCAN_RANGES_PER_SESSION * sessions)))


@dataclasses.dataclass
class RangeCopy:
    """One stream's copy by block ranges: its queries, its sink, its bookmark and its sessions' cursors."""

    records: RecordQueries
    sink: RecordSink
    bookmark: StreamBookmark
    writer: MessageWriter
    cursors: list[extensions.cursor]
    server: ServerBlocks

    def records_of(self, relation: Relation) -> RecordQueries:
        """Return the stream's queries reading `relation` (the table itself, or one of its partitions)."""
        return dataclasses.replace(self.records, relation=(relation.schema_name, relation.table_name))

    def copy(self, relation: Relation, rows_per_range: int) -> None:
        """Copy every range of `relation` the bookmark does not hold as copied, on every session at once."""
        copied = self.bookmark.copied_blocks(relation.name, relation.filenode)
        ranges = copied.missing(
            relation.blocks, self.server.blocks_per_range(relation, rows_per_range, len(self.cursors))
        )
        if not ranges:
            return
        records = self.records_of(relation)
        LOGGER.info(
            "%s: copying %s in %d ranges of blocks on %d sessions",
            self.records.stream.tap_stream_id,
            relation.name,
            len(ranges),
            min(len(self.cursors), len(ranges)),
        )
        free: queue.SimpleQueue[extensions.cursor] = queue.SimpleQueue()
        for cursor in self.cursors:
            free.put(cursor)
        lock = threading.Lock()

        def copy_range(start: int, end: int) -> None:
            cursor = free.get()
            try:
                where = block_condition(start, end)
                rows = self.sink.copy_shared(cursor, records.matching(where), lock)
            finally:
                free.put(cursor)
            with lock:
                self.sink.count(rows)
                self.bookmark.add_copied_blocks(relation.name, start, end)
                self.writer.write_state(self.bookmark.state)

        with self._stopping_on_failure() as pool:
            futures = [pool.submit(copy_range, start, end) for start, end in ranges]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()  # the first failure, raised here

    @contextlib.contextmanager
    def _stopping_on_failure(self) -> Iterator[ThreadPoolExecutor]:
        """A pool of one thread per session; on any failure, cancel what runs and wait for it to stop.

        No line is written once this returns, so the STATE written after a failure is the last line.
        """
        pool = ThreadPoolExecutor(max_workers=len(self.cursors), thread_name_prefix="range")
        try:
            yield pool
        except BaseException:
            for cursor in self.cursors:
                with contextlib.suppress(psycopg2.Error):
                    cursor.connection.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
