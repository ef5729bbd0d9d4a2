"""Every failure a user can fix, each with a message that names the cause and the fix.

Only `cli.main` catches the root class; any other exception is a bug and keeps its traceback.
Every message that leaves the tap, error or log line, passes `redact` first.
"""

from __future__ import annotations

import functools
import logging
import re
import signal

# The values of the secret settings of this run (the password, the sslkey path), as parse_config found them.
_SECRETS: dict[str, str] = {}


def keep_secret(name: str, value: str) -> None:
    """Remember a secret setting's value, so that no message shows it."""
    if value:
        _SECRETS[value] = name


def redact(text: str) -> str:
    """Return `text` with each secret setting's value replaced by its name where it stands as a token: libpq
    echoes the sslkey path, and a role "catalog_reader" is still named when the password is "reader"."""
    if not _SECRETS:
        return text
    pattern, names = _secrets_pattern(tuple(_SECRETS.items()))
    return pattern.sub(lambda match: f"<{names[int(match.lastgroup[1:])]} hidden>", text)


@functools.lru_cache(maxsize=4)
def _secrets_pattern(secrets: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], list[str]]:
    """One pattern finding every secret, the longest first (one that contains another is hidden whole), and
    the setting each of its groups names."""
    ordered = sorted(secrets, key=lambda secret: len(secret[0]), reverse=True)
    pattern = "|".join(f"(?P<s{i}>{_token_pattern(value)})" for i, (value, _) in enumerate(ordered))
    return re.compile(pattern), [name for _, name in ordered]


def _token_pattern(value: str) -> str:
    """A pattern of `value` with no letter, digit or underscore glued to an end of it that is one.

    So the password "reader" is not found in the role name "catalog_reader", and "p@ss!" is found in
    "p@ss!1". Each character may also be percent-encoded, as in a URI (p%40ss), a space also "+".
    """
    spellings = []
    for char in value:
        encoded = "".join(f"%{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        plus = r"|\+" if char == " " else ""
        spellings.append(f"(?:{re.escape(char)}|(?i:{encoded}){plus})")
    before = r"(?<!\w)" if _WORD.fullmatch(value[0]) else ""
    after = r"(?!\w)" if _WORD.fullmatch(value[-1]) else ""
    return before + "".join(spellings) + after


_WORD = re.compile(r"\w")


class _RedactingFilter(logging.Filter):
    """Redacts every record of the tap's logger before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg, record.args = redact(record.getMessage()), ()
        return True


logging.getLogger("tap-postgres").addFilter(_RedactingFilter())


class TapPostgresError(Exception):
    """Root of the errors the tap reports as one line on stderr and a non-zero exit."""

    exit_code = 1


class OutputClosedError(TapPostgresError):
    """Raised when stdout was closed by the program reading it (the target stopped): exit 141, as SIGPIPE."""

    exit_code = 141

    def __init__(self, message: str = ""):
        super().__init__(
            message
            or "stdout was closed by the program reading it (the target stopped), so the last STATE could not "
            "be written: rerun with the state the target saved last"
        )


class InterruptedRunError(TapPostgresError):
    """Raised when SIGINT or SIGTERM ends a run: exit 128 + the signal's number, 130 for SIGINT and 143 for SIGTERM."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


# the exit codes of a run a signal ended (InterruptedRunError), whose stdout may be gone
INTERRUPTED_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


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


class UnsupportedServerError(TapPostgresError):
    """Raised at connect time when the server is older than the lowest version the tap supports."""


class NotSupportedError(TapPostgresError):
    """Raised when the catalog or config asks for something this version cannot do."""


class ReplicationError(TapPostgresError):
    """Raised when LOG_BASED cannot read the WAL: wal_level, a missing or lost slot, privileges, wal2json."""


class StreamSyncError(TapPostgresError):
    """Raised when the database stops a stream's sync for a reason the user can act on.

    Privileges, a statement timeout, a lost connection, a standby's recovery conflict, an
    unpopulated materialized view: the run ends with the last STATE written, so a rerun resumes.
    """


class LockTimeoutError(TapPostgresError):
    """Raised when a statement waited lock_timeout for a lock another session holds; names that session."""


class OversizeValueError(TapPostgresError):
    """Raised when a value is too large for the server to render as JSON (a record over 1 GB)."""


class PrivilegeError(TapPostgresError):
    """Raised before any copy when the user lacks a privilege the run needs: schema USAGE, SELECT, REPLICATION."""
