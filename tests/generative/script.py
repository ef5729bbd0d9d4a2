"""The SQL script of one example: every statement it ran and every tap run, printable for psql."""

from __future__ import annotations

import json
import unicodedata

# Characters that a psql paste mangles or that hide in a terminal are written as escapes.
_ESCAPED = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _hidden(char: str) -> bool:
    """Control, format, private-use and unassigned characters, and separators other than the space."""
    return unicodedata.category(char)[0] == "C" or (unicodedata.category(char)[0] == "Z" and char != " ")


def _code(char: str, prefix: str = "\\") -> str:
    return f"{prefix}u{ord(char):04x}" if ord(char) <= 0xFFFF else f"{prefix}U{ord(char):08x}"


def ident(name: str) -> str:
    """Return `name` as a quoted SQL identifier (U&"..." with escapes when it holds hidden characters)."""
    if not any(_hidden(char) for char in name):
        return '"' + name.replace('"', '""') + '"'
    escaped = ""
    for char in name:
        if char in '\\"':
            escaped += char * 2
        elif _hidden(char):
            escaped += f"\\{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\+{ord(char):06x}"
        else:
            escaped += char
    return 'U&"' + escaped + '"'


def string(text: str) -> str:
    """Return `text` as an SQL string literal: '' quoting, or E'' with escapes when it holds hidden characters."""
    if not any(_hidden(char) for char in text):
        return "'" + text.replace("'", "''") + "'"
    return "E'" + "".join(_ESCAPED.get(char) or (_code(char) if _hidden(char) else char) for char in text) + "'"


def visible(text: str) -> str:
    """`text` with hidden characters as \\u escapes, for comments."""
    return "".join(_code(char) if _hidden(char) else char for char in text)


def typed(text: str, sql_type: str) -> str:
    """Return the literal `text` read as `sql_type`."""
    return f"{string(text)}::{sql_type}"


class Script:
    """Runs statements on a cursor and keeps them, with the tap runs between them, as one psql script."""

    def __init__(self, cursor):
        self.cursor = cursor
        self.lines: list[str] = []
        self.runs = 0

    def run(self, statement: str, params: tuple | None = None, *, show: bool = True) -> list[tuple]:
        """Execute one statement (kept in the script unless `show` is false) and return its rows, if any."""
        if show:
            self.lines.append(statement + ";")
        self.cursor.execute(statement, params)
        return self.cursor.fetchall() if self.cursor.description else []

    def comment(self, text: str) -> None:
        """Add `text` as SQL comment lines."""
        self.lines.extend("-- " + line for line in text.splitlines())

    def tap_run(self, method: str, config: dict, stream: str, extra: dict, state: bool) -> None:
        """Record a run of the tap: the command, its config and how the catalog selects the stream."""
        selection = {"selected": True, "replication-method": method, **extra}
        self.runs += 1
        self.comment(
            f"tap run {self.runs}: tap-postgres --config config.json --catalog catalog.json"
            + (" --state state.json (the last STATE of the previous run of this method)" if state else "")
            + f"\n  config.json: host, port, user, password, dbname plus {json.dumps(config, sort_keys=True)}"
            + f"\n  catalog.json: --discover output; stream {visible(json.dumps(stream, ensure_ascii=False))} "
            + f"metadata [] gets {visible(json.dumps(selection, ensure_ascii=False))}"
        )

    def text(self) -> str:
        """Return the script."""
        return "\n".join(self.lines)
