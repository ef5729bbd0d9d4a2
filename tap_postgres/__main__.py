"""The `tap-postgres` command and `python -m tap_postgres`: SIGINT and SIGTERM are handled from the first statement."""

import _signal  # the C module under `signal`: importing it runs no Python code a KeyboardInterrupt could break

# held back, not lost, until the tap's handler is in place: the import of `signal` takes a millisecond
_signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT, _signal.SIGTERM})

from tap_postgres import interrupts  # noqa: E402

interrupts.install()  # before click, psycopg2 and the tap's modules are imported: see interrupts

from tap_postgres.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
