"""SIGINT and SIGTERM outside the run's own handler (locks.watching): one line and exit 128 + signal, no traceback.

Python's own SIGINT handler raises KeyboardInterrupt wherever the interpreter is. In the first tenth of
a second, while the tap imports its modules, that was a traceback; or the exception was dropped by code
that swallows errors and the run went on to exit 0; or it came out of an exec() (a dataclass being
made), after which Python kills itself with SIGINT on exit even though the tap had caught it. So the
entry module installs this handler before it imports anything else. Until the run's output begins
there is nothing to save, and a signal ends the process at once. After that it is kept for the run:
locks.watching raises it as soon as it starts (the run writes its last STATE), and a signal that came
after the run's last watched step ends the command once its output is whole (cli.main).
"""

from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_output_begun = False
_pending: int | None = None


def install() -> None:
    """Handle SIGTERM and SIGINT as this module says, from now on; one the entry module held back is handled now."""
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def not_begun(signum: int) -> str:
    """The line of a run a signal ended before it wrote anything."""
    return f"interrupted by {signal.Signals(signum).name} before the sync began; nothing was written"


def output_begins() -> None:
    """Note that the run may write to stdout from now on: a signal is kept for the run, not acted on at once."""
    global _output_begun
    _output_begun = True


def take_pending() -> int | None:
    """Return the signal that came since the output began and that the run has not acted on, and forget it."""
    global _pending
    signum, _pending = _pending, None
    return signum


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _output_begun:
        _pending = _pending or signum
        return
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)  # a second signal would print the line again
    os.write(2, f"tap-postgres: error: {not_begun(signum)}\n".encode())
    os._exit(128 + signum)
