"""The `tap-postgres` command: runs the singer-sdk CLI and turns a TapPostgresError into one stderr line."""

from __future__ import annotations

import sys

import click

from tap_postgres.errors import TapPostgresError
from tap_postgres.tap import TapPostgres


def main(argv: list[str] | None = None) -> None:
    """Run the tap; exit 1 with `tap-postgres: error: <cause and fix>` on any error the user can fix."""
    try:
        TapPostgres.cli.main(args=argv, prog_name="tap-postgres", standalone_mode=False)
    except TapPostgresError as exc:
        _fail(str(exc))
    except click.ClickException as exc:
        _fail(exc.format_message())
    except click.exceptions.Abort:
        _fail("aborted")
    except BrokenPipeError:
        _fail("stdout was closed by the program reading it (the target stopped)")


def _fail(message: str) -> None:
    # one line whatever the names in it hold: a table may be named with a line break
    line = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    sys.stderr.write(f"tap-postgres: error: {line}\n")
    sys.stderr.flush()
    sys.exit(1)
