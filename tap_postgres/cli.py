"""The `tap-postgres` command: runs the singer-sdk CLI and turns a TapPostgresError into one stderr line.

Exit codes: 0 done, 1 an error the user can fix, 130 interrupted (SIGINT, SIGTERM), 141 stdout closed
by the program reading it (as a shell reports SIGPIPE).
"""

from __future__ import annotations

import os
import sys

import click

from tap_postgres.errors import EXIT_INTERRUPTED, StdoutClosedError, TapPostgresError, redact
from tap_postgres.tap import TapPostgres


def main(argv: list[str] | None = None) -> None:
    """Run the tap; exit 1 with `tap-postgres: error: <cause and fix>` on any error the user can fix."""
    try:
        TapPostgres.cli.main(args=argv, prog_name="tap-postgres", standalone_mode=False)
    except StdoutClosedError as exc:
        _stdout_closed(exc)
    except TapPostgresError as exc:
        _fail(str(exc))
    except click.ClickException as exc:
        _fail(exc.format_message())
    except click.exceptions.Abort:  # click's Ctrl-C outside a sync
        _fail("interrupted", EXIT_INTERRUPTED)


EXIT_STDOUT_CLOSED = 141


def _stdout_closed(exc: StdoutClosedError) -> None:
    """End the run whose stdout was closed: one line, and no second failure when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the at-exit flush of sys.stdout would print "Exception ignored"
    os.close(devnull)
    _fail(str(exc), EXIT_INTERRUPTED if exc.interrupted else EXIT_STDOUT_CLOSED)


def _fail(message: str, code: int = 1) -> None:
    # one line whatever the names in it hold: a table may be named with a line break
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in redact(message))
    sys.stderr.write(f"tap-postgres: error: {line}\n")
    sys.stderr.flush()
    sys.exit(code)
