"""The JSON files the tap reads (--config, --catalog, --state, and the state file polled during a run),
read so that any bytes give one line, never a traceback, a hang or unbounded memory.

Each file is opened without blocking (a FIFO put where the state file was must not stop the run),
must be a regular file no larger than its bound, UTF-8, and JSON whose nesting and numbers stay in
bounds. A number that does not fit a float keeps its digits as a Decimal, up to what a PostgreSQL
numeric can hold: a bookmark of a numeric replication key may be that long.
"""

from __future__ import annotations

import decimal
import json
import logging
import os
import re
import stat
from typing import Any

LOGGER = logging.getLogger("tap-postgres")

MAX_BYTES = {"config": 16 << 20, "catalog": 1 << 30, "state": 64 << 20}
# deeper than any config, catalog or state the tap writes or reads; far below Python's recursion limit
MAX_DEPTH = 100
# numeric: up to 131072 digits before the point and 16383 after
MAX_NUMBER_DIGITS = 131072 + 16383 + 2
# Python refuses to convert longer integer text to int (sys.get_int_max_str_digits)
_INT_DIGITS = 4000


class FileProblem(Exception):
    """Raised with the one-line reason a file cannot be read as the JSON the tap expects."""


def read_json(path: str, what: str, *, parse_float: Any = None) -> Any:
    """Return the parsed JSON of the `what` file at `path`, or raise FileProblem with one line."""
    return parse_json(read_bytes(path, what), path, what, parse_float=parse_float)


def read_bytes(path: str, what: str) -> bytes:
    """Read a regular file of at most its kind's bound, without blocking on a FIFO or a device."""
    limit = MAX_BYTES[what]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise FileProblem(f"cannot read the {what} file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"the {what} file {path} is not a regular file ({_kind(info.st_mode)}): give a file")
        if info.st_size > limit:
            raise FileProblem(
                f"the {what} file {path} is {info.st_size} bytes, over the {limit >> 20} MiB a {what} may be"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            content = stream.read(limit + 1)
    except OSError as exc:
        raise FileProblem(f"cannot read the {what} file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(content) > limit:  # it grew while being read
        raise FileProblem(f"the {what} file {path} is over the {limit >> 20} MiB a {what} may be")
    return content


def parse_json(content: bytes, path: str, what: str, *, parse_float: Any = None) -> Any:
    """Parse a file's bytes as bounded JSON, or raise FileProblem naming the file and what is wrong."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(
            f"the {what} file {path} is not UTF-8 text (byte {exc.start} is not valid): save it as UTF-8"
        ) from None
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise FileProblem(
            f"the {what} file {path} nests arrays or objects {depth} deep, more than the {MAX_DEPTH} allowed"
        )
    try:
        return json.loads(text, parse_float=parse_float or float, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise FileProblem(
            f"the {what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise FileProblem(f"the {what} file {path} is not valid JSON: {exc}") from None


def _parse_int(text: str) -> int | decimal.Decimal:
    if len(text) <= _INT_DIGITS:
        return int(text)
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text)} digits, more than a PostgreSQL numeric holds")
    return decimal.Decimal(text)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _max_depth(text: str) -> int:
    """Return how deep arrays and objects nest: strings and everything but brackets are dropped at C
    speed, so Python walks only the brackets, as many as the parse makes containers."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot nest deeper than the brackets it has
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        else:
            depth -= 1
    return deepest


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


class PolledJsonFile:
    """A JSON file read again and again during a run (the state a target's runner rewrites).

    `read` returns the parsed content, or None when the file tells nothing now (missing, being
    rewritten, malformed); one that can never be read (a FIFO, a device, over the bound) is skipped
    with one warning per distinct problem. An unchanged file (same device, inode, size and mtime)
    is not parsed again: a large state costs its parse once, not at every poll.
    """

    def __init__(self, path: str, what: str, *, parse_float: Any = None):
        self.path = path
        self.what = what
        self.parse_float = parse_float
        self._key: tuple | None = None
        self._value: Any = None
        self._warned: set[str] = set()

    def read(self) -> Any:
        """Return the file's JSON as it is now, or None when it cannot tell anything now."""
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key == self._key:
            return self._value
        try:
            value = read_json(self.path, self.what, parse_float=self.parse_float)
        except FileProblem as exc:
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES[self.what]:
                self._warn_once(f"{exc}; it is skipped at every poll until it is one")
            return None
        self._key, self._value = key, value
        return value

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            LOGGER.warning("%s", message)
