"""More sessions on a copy's exported snapshot, which render block ranges of the copy at the same time.

A second session needs a second server connection while the copy's own holds a transaction.
Through a connection pooler that has none to spare, its first statement would wait for the copy
to end, and the copy waits for it. A transaction-mode pooler (PgBouncer) may hand both sessions
the same server connection, which their backend pids tell at once; a session-mode pooler, or any
pool that is full, queues the statement, and the session is given up after `connect_timeout`.
Either way the copy goes on with the sessions it has.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator

import psycopg2
from psycopg2 import extensions

from tap_postgres.errors import TapPostgresError
from tap_postgres.sync.rows import begin_snapshot

LOGGER = logging.getLogger("tap-postgres")


class HelperSessions:
    """Opens a run's second sessions on exported snapshots, until one could not get a server connection in time."""

    def __init__(self, open_session: Callable[[], extensions.connection], wait_seconds: float):
        self._open_session = open_session
        self._wait_seconds = wait_seconds
        # a full pool stays full for the run: later copies do not wait for it again
        self._given_up = False

    @contextlib.contextmanager
    def on_snapshot_of(self, conn: extensions.connection, count: int = 1) -> Iterator[list[extensions.cursor]]:
        """Yield cursors of up to `count` more sessions that see `conn`'s snapshot: fewer, or none, when they cannot be had.

        `conn` holds no transaction yet: its first statement exports the snapshot.
        """
        opened: list[tuple[extensions.connection, int]] = []
        cursors: list[extensions.cursor] = []
        try:
            self._open(count, opened)
            cursors = self._join_snapshot(conn, opened)
        except (psycopg2.Error, TapPostgresError) as exc:
            LOGGER.warning("Copying with one session: more sessions on the same snapshot failed (%s)", exc)
            cursors = []
        helpers = [helper for helper, _ in opened]
        if not cursors:
            for helper in helpers:
                helper.close()
            begin_snapshot(conn)  # nothing was read yet, so a fresh snapshot loses nothing
            yield []
            return
        try:
            yield cursors
        finally:
            for helper in helpers:
                with contextlib.suppress(psycopg2.Error):
                    helper.rollback()
                helper.close()

    def _open(self, count: int, opened: list[tuple[extensions.connection, int]]) -> None:
        """Open up to `count` sessions into `opened`, each with its backend's pid; stop at the first that gets no server connection in time."""
        while len(opened) < count and not self._given_up:
            session = _Opening(self._open_session).result(self._wait_seconds)
            if session is None:
                self._given_up = True
                LOGGER.warning(
                    "Copying with %d session(s): one more got no server connection within %s s "
                    "(connect_timeout), as behind a connection pooler whose pool is full; the rest of the run "
                    "copies with as many too (a pool of full_table_sessions server connections for the tap avoids this)",
                    len(opened) + 1,
                    self._wait_seconds,
                )
                break
            opened.append(session)

    def _join_snapshot(
        self, conn: extensions.connection, opened: list[tuple[extensions.connection, int]]
    ) -> list[extensions.cursor]:
        """Put each opened session with a server connection of its own on a snapshot `conn` exports; return their cursors.

        Each helper asked for its backend's pid in a transaction it ended (a transaction-mode
        pooler takes the server connection back) before `conn` begins one and asks too.
        """
        if not opened:
            return []
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), pg_export_snapshot()")
            pid, snapshot = cur.fetchone()
        seen, cursors = {pid}, []
        for helper, helper_pid in opened:
            if helper_pid in seen:
                LOGGER.info(
                    "Copying with fewer sessions: one more reaches the same server connection as another (a "
                    "connection pooler), on which it would wait for the other to end"
                )
                continue
            seen.add(helper_pid)
            begin_snapshot(helper)
            helper_cursor = helper.cursor()
            helper_cursor.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            cursors.append(helper_cursor)
        return cursors


class _Opening:
    """A session opened, and its backend's pid asked for, in a thread of its own, which can be given up on.

    In a thread because both may wait in a pooler's queue: psycopg2 runs `SET DATESTYLE` as it
    connects when the server's DateStyle is not ISO, and a statement queued in a pooler has no
    server to cancel it and no timeout the tap can set. Given up on, the session's socket is shut
    down, which ends the wait, and the thread closes the session.
    """

    def __init__(self, open_session: Callable[[], extensions.connection]):
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._abandoned = False
        self._conn: extensions.connection | None = None
        self._pid: int | None = None
        self._error: Exception | None = None
        threading.Thread(target=self._open, args=(open_session,), daemon=True).start()

    def _open(self, open_session: Callable[[], extensions.connection]) -> None:
        try:
            conn = open_session()
            with self._lock:
                self._conn = conn
                abandoned = self._abandoned
            if not abandoned:
                self._pid = _backend_pid(conn)
        except Exception as exc:  # handed to the waiting thread, or dropped with the session
            self._error = exc
        finally:
            with self._lock:
                self._done.set()
                if self._abandoned and self._conn is not None:
                    self._conn.close()

    def result(self, seconds: float) -> tuple[extensions.connection, int] | None:
        """Return the session and its backend's pid, or None when they were not there within `seconds`."""
        self._done.wait(seconds)
        with self._lock:
            if not self._done.is_set():
                self._abandoned = True
                if self._conn is not None:
                    with socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
                        sock.shutdown(socket.SHUT_RDWR)
                return None
        if self._error is not None:
            if self._conn is not None:
                self._conn.close()
            raise self._error
        return self._conn, self._pid


def _backend_pid(conn: extensions.connection) -> int:
    """Return the pid of the server backend that answers `conn`, in a transaction of its own."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.rollback()
    return pid
