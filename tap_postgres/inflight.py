"""The statements the tap's sessions are running now, so that a watcher can say who blocks them and a
signal can cancel them.

psycopg2 waits for the server inside libpq, in C: a Python signal handler runs only once the
statement returns, which for a statement waiting on a lock is when the lock is released. Every
TapCursor statement is recorded here while it runs (a few dict operations per statement, none per
row), so a thread that learns of SIGTERM or SIGINT at once can cancel them (locks.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.errors


class Interrupted(Exception):
    """Raised when SIGTERM or SIGINT stops the run: its running statements were cancelled."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclasses.dataclass
class Statement:
    """One statement in flight: its session, when it began, and what the run was doing then."""

    conn: psycopg2.extensions.connection
    started: float
    doing: str
    table: tuple[str, str] | None  # (schema, table) of the stream being synced, when there is one
    last_report: float = 0.0
    blockers: list = dataclasses.field(default_factory=list)  # the sessions the lock watcher last saw block it


class InFlight:
    """The registry of running statements, the signal that stops the run, and what the run is doing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, Statement] = {}
        self._tokens = itertools.count()
        self.doing = "the run"  # a stream id, "discovery": what the lines about a wait name
        self.table: tuple[str, str] | None = None
        self.signum: int | None = None
        self.raised = False  # the main thread has raised Interrupted for the signal
        # set while locks.watching runs: turns a lock timeout into a line naming the blocker
        self.describe_lock_timeout: Callable[[Statement], Exception] | None = None

    @contextlib.contextmanager
    def statement(self, conn: psycopg2.extensions.connection) -> Iterator[None]:
        """Record a statement of `conn` while it runs; a cancel the signal caused becomes Interrupted."""
        if self.signum is not None:
            raise Interrupted(self.signum)
        token = next(self._tokens)
        running = Statement(conn, time.monotonic(), self.doing, self.table)
        with self._lock:
            self._running[token] = running
        try:
            yield
        except psycopg2.Error as exc:
            if self.signum is not None:
                self._raising_for_signal()
                raise Interrupted(self.signum) from None
            if isinstance(exc, psycopg2.errors.LockNotAvailable) and self.describe_lock_timeout is not None:
                raise self.describe_lock_timeout(running) from None
            raise
        finally:
            with self._lock:
                del self._running[token]

    def now_doing(self, doing: str, table: tuple[str, str] | None = None) -> tuple[str, tuple[str, str] | None]:
        """Say what the run does now (a stream id and its table), for the lines about a lock wait; return
        what it did before."""
        previous = self.doing, self.table
        self.doing, self.table = doing, table
        return previous

    def running_for(self, seconds: float) -> list[Statement]:
        """Return the statements that have been running for at least `seconds`."""
        since = time.monotonic() - seconds
        with self._lock:
            return [running for running in self._running.values() if running.started <= since]

    def cancel_all(self, signum: int) -> None:
        """Note the signal and cancel every running statement; safe from any thread."""
        self.signum = signum
        with self._lock:
            sessions = [running.conn for running in self._running.values()]
        for conn in sessions:
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()

    def on_signal(self, signum: int, frame) -> None:
        """The Python handler of SIGTERM and SIGINT: cancel, and raise Interrupted once in the main thread."""
        self.cancel_all(signum)
        if not self.raised:
            self._raising_for_signal()
            raise Interrupted(signum)

    def _raising_for_signal(self) -> None:
        # only the main thread's Interrupted ends the run: the handler must not raise a second one
        # while the run writes its last STATE
        if threading.current_thread() is threading.main_thread():
            self.raised = True

    def reset(self) -> None:
        """Forget the signal of a run that has ended (the tests run several in one process)."""
        self.signum = None
        self.raised = False
        self.now_doing("the run")


IN_FLIGHT = InFlight()
