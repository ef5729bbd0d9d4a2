"""Every failure a user can fix, each with a message that names the cause and the fix.

Only `cli.main` catches the root class; any other exception is a bug and keeps its traceback.
"""

# The exit code of a run ended by SIGINT or SIGTERM, as a shell reports an interrupted command.
EXIT_INTERRUPTED = 130


class TapPostgresError(Exception):
    """Root of the errors the tap reports as one line on stderr and a non-zero exit."""


class ConfigError(TapPostgresError):
    """Raised when a config file is unreadable, not JSON, or a key is missing or of the wrong type."""


class ConnectionFailedError(TapPostgresError):
    """Raised when the server cannot be reached: wrong host or port, timeout, SSL refused."""


class AuthenticationError(TapPostgresError):
    """Raised when the server rejects the user or password."""


class DatabaseMissingError(TapPostgresError):
    """Raised when the configured database does not exist on the server."""


class CatalogError(TapPostgresError):
    """Raised when the catalog file is not JSON or does not describe streams the tap can sync."""


class StateError(TapPostgresError):
    """Raised when the state file is not JSON or its bookmarks have the wrong shape."""


class TableMissingError(TapPostgresError):
    """Raised when a selected stream's table or column no longer exists in the database."""


class NotSupportedError(TapPostgresError):
    """Raised when the catalog or config asks for something this version cannot do."""


class ReplicationError(TapPostgresError):
    """Raised when LOG_BASED cannot read the WAL: wal_level, a missing or lost slot, privileges, wal2json."""


class StreamSyncError(TapPostgresError):
    """Raised when the database stops a stream's sync for a reason the user can act on.

    Privileges, a statement timeout, a lost connection, a standby's recovery conflict, an
    unpopulated materialized view: the run ends with the last STATE written, so a rerun resumes.
    """


class PrivilegeError(TapPostgresError):
    """Raised before any copy when the user lacks a privilege the run needs: schema USAGE, SELECT, REPLICATION."""


class StdoutClosedError(TapPostgresError):
    """Raised when the program reading stdout (the target) closed it: the last STATE could not be written."""

    def __init__(self, interrupted: bool):
        cause = "interrupted, and stdout" if interrupted else "stdout"
        super().__init__(
            f"{cause} was closed by the program reading it (the target stopped): the last STATE could not be "
            "written; rerun with the last STATE the target saved"
        )
        self.interrupted = interrupted


def interrupted_by_user(exc: BaseException) -> bool:
    """Whether the pipe broke while an interrupt (Ctrl-C, SIGTERM) was writing the last STATE."""
    context = exc.__context__
    while context is not None:
        if isinstance(context, KeyboardInterrupt) or (
            isinstance(context, SystemExit) and context.code == EXIT_INTERRUPTED
        ):
            return True
        context = context.__context__
    return False


# The values of the settings marked secret in this run (password, sslkey): no error line may show them.
_SECRETS: set[str] = set()


def forget_secrets() -> None:
    """Forget the secrets of a previous config (a process parses one config per run)."""
    _SECRETS.clear()


def register_secret(value: str) -> None:
    """Remember a secret setting's value, so `redact` removes it from every error line."""
    if value:
        _SECRETS.add(value)


def redact(message: str) -> str:
    """Return `message` with every secret setting's value (a password, an sslkey path) replaced by `***`."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message
