"""Waiting for locks: a line naming the blocking session while a statement waits, one naming it when
lock_timeout ends the wait, and SIGTERM or Ctrl-C that cancels what the sessions run at once.

`watching` runs around discovery and a sync. Its watcher thread wakes once a second and looks only
at statements running for `progress_seconds` or more (inflight.py); for each, one query on a
session of its own asks pg_stat_activity whether the statement waits for a lock and only then asks
pg_blocking_pids who holds it. Its signal thread reads the signal wakeup fd, which the interpreter
writes from its C handler at once, and cancels the running statements.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psycopg2
from psycopg2 import extensions

from tap_postgres import interrupts
from tap_postgres.config import Config
from tap_postgres.connection import connect, set_local
from tap_postgres.errors import LockTimeoutError, TapPostgresError
from tap_postgres.inflight import IN_FLIGHT, Interrupted, Statement

LOGGER = logging.getLogger("tap-postgres")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
WAKE_SECONDS = 1.0
ASK_TIMEOUT_SECONDS = 10  # the statement_timeout of the watcher's own queries

# The sessions a waiting backend waits for, with what it waits for: a lock on a table, or the end
# of a transaction (creating a slot waits for the running ones). pg_blocking_pids takes the lock
# manager's locks for a moment, so it is only asked once pg_stat_activity, which does not, says the
# backend (of the tap's user: a pooler's made-up pid must not name another's) waits for a lock.
_BLOCKERS_SQL = """
SELECT (SELECT CASE WHEN c.oid IS NOT NULL THEN 'a lock on ' || format('%%I.%%I', n.nspname, c.relname)
                    WHEN w.locktype IN ('transactionid', 'virtualxid')
                    THEN 'the end of transaction ' || coalesce(w.transactionid::text, w.virtualxid)
                    ELSE 'a ' || w.locktype || ' lock' END
          FROM pg_locks w
          LEFT JOIN pg_class c ON c.oid = w.relation
          LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE w.pid = %(pid)s AND NOT w.granted LIMIT 1),
       b.pid, b.usename, b.application_name, b.state,
       upper(split_part(ltrim(b.query), ' ', 1)), extract(epoch FROM now() - b.query_start)::bigint
  FROM unnest(CASE WHEN (SELECT wait_event_type FROM pg_stat_activity
                          WHERE pid = %(pid)s AND usename = session_user) = 'Lock'
                   THEN pg_blocking_pids(%(pid)s) END) AS blocking(pid)
  LEFT JOIN pg_stat_activity b ON b.pid = blocking.pid
 ORDER BY b.pid
"""
# After a lock timeout nothing waits any more: the sessions that hold or queue for ACCESS EXCLUSIVE
# (the one mode a read conflicts with) on a relation of this database, or on `table` when it is given.
_HOLDERS_SQL = """
SELECT 'a lock on ' || format('%%I.%%I', n.nspname, c.relname),
       l.pid, a.usename, a.application_name, a.state,
       upper(split_part(ltrim(a.query), ' ', 1)), extract(epoch FROM now() - a.query_start)::bigint
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND (%(schema)s::text IS NULL OR (n.nspname, c.relname) = (%(schema)s::text, %(table)s::text))
 ORDER BY l.granted DESC, a.query_start, l.pid
"""
MAX_NAMED = 3


@dataclasses.dataclass(frozen=True)
class Blocker:
    """A session that holds (or queues ahead for) a lock the tap waits for, as pg_stat_activity shows it."""

    waited_for: str | None  # "a lock on public.orders", "the end of transaction 745"
    pid: int
    user: str | None
    application: str | None
    state: str | None  # None where the tap's user may not see the other user's activity
    command: str | None
    seconds: int | None

    def describe(self) -> str:
        """Return `pid 42 (user "u", application "psql", idle in transaction after LOCK, which began 9 s ago)`."""
        parts = [f'user "{self.user}"'] if self.user else []
        if self.application:
            parts.append(f'application "{self.application}"')
        if self.state == "active" and self.command:
            parts.append(f"running {self.command} for {self.seconds} s")
        elif self.state and self.command:
            parts.append(f"{self.state} after {self.command}, which began {self.seconds} s ago")
        elif self.state:
            parts.append(self.state)
        return f"pid {self.pid} ({', '.join(parts)})" if parts else f"pid {self.pid}"


def describe_blockers(blockers: list[Blocker]) -> str:
    """Return the sessions, the first few by name: `pid 42 (...) and 3 more`."""
    named = ", ".join(blocker.describe() for blocker in blockers[:MAX_NAMED])
    more = len(blockers) - MAX_NAMED
    return f"{named} and {more} more" if more > 0 else named


def _fix(blockers: list[Blocker]) -> str:
    """Return what ends the wait: the session ended (by pg_terminate_backend) or finished."""
    if len(blockers) == 1:
        return f"end that session (SELECT pg_terminate_backend({blockers[0].pid})) or let it finish"
    pids = ", ".join(str(blocker.pid) for blocker in blockers[:MAX_NAMED])
    return f"end those sessions (pg_terminate_backend of {pids}) or let them finish"


class LockWatch:
    """The watcher thread and the signal thread of one run, with the sessions the watcher asks on."""

    def __init__(self, open_session: Callable[[bool], extensions.connection], lock_timeout: int, interval: float):
        self._open_session = open_session  # secondary or not -> a TapConnection to that server
        self._sessions: dict[bool, extensions.connection] = {}
        self._session_lock = threading.Lock()  # the watcher and a failing statement's thread share them
        self.lock_timeout = lock_timeout
        self.interval = interval
        self._stop = threading.Event()
        self._gave_up = False
        self._watcher = threading.Thread(target=self._watch, name="tap-postgres-lock-watch", daemon=True)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._signals = threading.Thread(target=self._cancel_on_signal, name="tap-postgres-signals", daemon=True)

    def start(self) -> None:
        """Start both threads."""
        self._watcher.start()
        self._signals.start()

    def stop(self) -> None:
        """Stop both threads and close the watcher's sessions."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")  # no signal is numbered 0
        self._signals.join(timeout=5)
        self._watcher.join(timeout=5)
        os.close(self._wake_read)
        os.close(self._wake_write)
        # a watcher still stuck in a query (a pooler's queue) must not keep the run from ending
        if self._session_lock.acquire(timeout=5):
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()
            self._session_lock.release()

    @property
    def wakeup_fd(self) -> int:
        """The fd the interpreter writes each signal's number to (signal.set_wakeup_fd)."""
        return self._wake_write

    def _cancel_on_signal(self) -> None:
        while not self._stop.is_set():
            try:
                numbers = os.read(self._wake_read, 64)
            except OSError:
                return
            for signum in numbers:
                if signum in SIGNALS:
                    IN_FLIGHT.cancel_all(signum)

    def _watch(self) -> None:
        while not self._stop.wait(WAKE_SECONDS):
            if IN_FLIGHT.signum is not None:
                return  # the run stops
            for running in IN_FLIGHT.running_for(self.interval):
                self._report(running)

    def _report(self, running: Statement) -> None:
        """Log who blocks a long statement, at most once per interval; nothing when it waits for no lock."""
        now = time.monotonic()
        if now - running.last_report < self.interval:
            return
        running.last_report = now
        blockers = self._ask(running, _BLOCKERS_SQL, {"pid": running.conn.info.backend_pid})
        if not blockers:
            return
        running.blockers = blockers  # what the error names if lock_timeout ends the wait
        LOGGER.warning(
            "%s: waiting %.0f s for %s, blocked by %s: %s; %s",
            running.doing,
            now - running.started,
            blockers[0].waited_for or "a lock",
            describe_blockers(blockers),
            _fix(blockers),
            f"lock_timeout ({self.lock_timeout} s) ends the wait"
            if self.lock_timeout
            else "lock_timeout is 0, so the tap waits for ever",
        )

    def lock_timeout_error(self, running: Statement) -> TapPostgresError:
        """Return the error of a statement that lock_timeout stopped, naming who blocked it.

        Nothing waits any more, so the sessions are those that hold ACCESS EXCLUSIVE on the stream's
        table now, else those the watcher saw block it, else any holding ACCESS EXCLUSIVE in the database.
        """
        # the failed transaction ends first: through a pooler with one server connection, the
        # watcher's session would wait for it for ever
        with contextlib.suppress(psycopg2.Error):
            running.conn.rollback()
        blockers = []
        if running.table:
            schema, table = running.table
            blockers = self._ask(running, _HOLDERS_SQL, {"schema": schema, "table": table})
        blockers = blockers or running.blockers or self._ask(running, _HOLDERS_SQL, {"schema": None, "table": None})
        after = f"after lock_timeout ({self.lock_timeout} s)"
        if not blockers:
            return LockTimeoutError(
                f"{running.doing}: gave up waiting for a lock {after}; the session that held it was not found "
                "(it may have ended): rerun with the last STATE, and raise lock_timeout (0 waits for ever) "
                "if it happens again"
            )
        return LockTimeoutError(
            f"{running.doing}: gave up waiting for {blockers[0].waited_for or 'a lock'} {after}, blocked by "
            f"{describe_blockers(blockers)}: {_fix(blockers)}, or raise lock_timeout (0 waits for ever); "
            "then rerun with the last STATE"
        )

    def _ask(self, running: Statement, query: str, params: dict) -> list[Blocker]:
        """Run a blockers query on the watcher's session to the statement's server; [] when it cannot."""
        secondary = getattr(running.conn, "secondary", False)
        with self._session_lock:
            if self._gave_up:
                return []
            try:
                session = self._sessions.get(secondary)
                if session is None:
                    session = self._sessions[secondary] = self._open_session(secondary)
                    session.commit_each_statement = True
                    session.transaction_start += set_local({"statement_timeout": f"{ASK_TIMEOUT_SECONDS}s"})
                with session.cursor() as cur:
                    cur.execute(query, params)
                    return [Blocker(*row) for row in cur.fetchall()]
            except Interrupted:
                return []  # the run stops: nothing to name
            except (psycopg2.Error, TapPostgresError) as exc:
                # the run goes on without the lines: a full max_connections must not stop it
                self._gave_up = True
                LOGGER.warning("Not watching for lock waits: %s", str(exc).strip().splitlines()[0])
                return []


@contextlib.contextmanager
def watching(config: Config) -> Iterator[None]:
    """Watch the run's statements for lock waits (a line every progress_seconds) and cancel them on
    SIGTERM or SIGINT, until the block ends.

    Inside, both signals raise inflight.Interrupted in the main thread (once), after every running
    statement was cancelled.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    watch = LockWatch(
        lambda secondary: connect(config, secondary=secondary), config.lock_timeout, max(config.progress_seconds, 1)
    )
    previous = {signum: signal.signal(signum, IN_FLIGHT.on_signal) for signum in SIGNALS}
    previous_fd = signal.set_wakeup_fd(watch.wakeup_fd, warn_on_full_buffer=False)
    IN_FLIGHT.describe_lock_timeout = watch.lock_timeout_error
    watch.start()
    try:
        pending = interrupts.take_pending()
        if pending is not None:  # it came since the output began, before this handler (interrupts)
            IN_FLIGHT.on_signal(pending, None)
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        IN_FLIGHT.describe_lock_timeout = None
        watch.stop()
        IN_FLIGHT.reset()
