"""The `tap-postgres` command: runs the tap's CLI and turns a TapPostgresError into one stderr line."""

from __future__ import annotations

import os
import signal
import sys

import click

from tap_postgres import interrupts
from tap_postgres.errors import (
    INTERRUPTED_EXIT_CODES,
    InterruptedRunError,
    OutputClosedError,
    TapPostgresError,
    redact,
)


def main(argv: list[str] | None = None) -> None:
    """Run the tap; exit 1 with `tap-postgres: error: <cause and fix>` on any error the user can fix."""
    try:
        from tap_postgres.tap import command
    except KeyboardInterrupt:
        _interrupted_before_sync()
    try:
        command.main(args=argv, prog_name="tap-postgres", standalone_mode=False)
    except TapPostgresError as exc:
        _fail(str(exc), exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message())
    except click.exceptions.Abort:
        # a Ctrl-C before the run's signal thread starts (locks.watching), as psycopg2 and the sync modules load,
        # when main runs without the entry module's handler (interrupts)
        _fail(interrupts.not_begun(signal.SIGINT), InterruptedRunError.exit_code)
    except BrokenPipeError:
        _fail(str(OutputClosedError()), OutputClosedError.exit_code)
    signum = interrupts.take_pending()
    if signum is not None:
        # it came after the run's last watched step, and waited for the output to be written whole
        name = signal.Signals(signum).name
        _fail(f"interrupted by {name} as the run ended, once its output was written whole", 128 + signum)


def _interrupted_before_sync() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C would interrupt the line
    _fail(interrupts.not_begun(signal.SIGINT), InterruptedRunError.exit_code)


def _fail(message: str, exit_code: int = 1) -> None:
    # one line whatever the names in it hold: a table may be named with a line break
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in redact(message))
    sys.stderr.write(f"tap-postgres: error: {line}\n")
    sys.stderr.flush()
    if exit_code == OutputClosedError.exit_code or exit_code in INTERRUPTED_EXIT_CODES:
        # a closed stdout would fail again in Python's flush at exit, with a message of its own
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(exit_code)
