"""Singer messages on stdout: orjson lines into one large buffer, flushed at STATE, at the end, and while LOG_BASED streams."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import sys
from typing import Any, BinaryIO

import orjson

from tap_postgres import interrupts

RECORD_PREFIX = b'{"type":"RECORD","stream":'  # how every RECORD line starts (record_envelope)
# Large enough that writes to the pipe are rare; small enough to stay far below the memory budget.
BUFFER_BYTES = 4 << 20


class MessageWriter:
    """Writes Singer messages to a binary stream; FULL_TABLE copies server-rendered lines into `raw`."""

    # FULL_TABLE writes ACTIVATE_VERSION before the records on a first run only (pipelinewise's order);
    # a BatchWriter wants it before every fresh copy
    versions_before_records = False

    def __init__(self, raw: BinaryIO):
        self.raw = raw

    @classmethod
    def to_stdout(cls) -> MessageWriter:
        """Return a writer on stdout with a large buffer of its own."""
        interrupts.output_begins()  # a signal no longer ends the process at once: a line may be half written
        sys.stdout.flush()
        return cls(open(os.dup(sys.stdout.fileno()), "wb", buffering=BUFFER_BYTES))

    def __enter__(self) -> MessageWriter:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # the run failed: the error that ended it is the one to report, not a flush to a closed pipe
        try:
            self.close()
        except OSError:
            pass

    def close(self) -> None:
        """Flush what is buffered and release the stream."""
        try:
            self.raw.flush()
        finally:
            try:
                self.raw.close()
            except OSError:
                pass  # close() flushes again: the pipe that refused the first flush refuses it too

    def write_lines(self, block: bytes) -> None:
        """Write whole lines in pieces that fit the buffer, so a write a signal interrupts loses whole lines only.

        The buffered stream keeps what it has not written yet when an exception (SIGTERM, Ctrl-C)
        interrupts a write to a full pipe, but a piece larger than its buffer is written straight
        from the caller's bytes and the rest dropped: half a RECORD line, then the last STATE.
        """
        if len(block) <= BUFFER_BYTES:
            self.raw.write(block)
            return
        view = memoryview(block)
        start = 0
        while start < len(block):
            end = block.rfind(b"\n", start, start + BUFFER_BYTES) + 1
            if end <= start:  # a line longer than the buffer goes whole
                end = block.find(b"\n", start + BUFFER_BYTES) + 1 or len(block)
            self.raw.write(view[start:end])
            start = end

    @property
    def bytes_writer(self) -> MessageWriter:
        """The writer that takes server-rendered lines as they are: this one (a MappingWriter's is its inner one)."""
        return self

    def is_mapped(self, stream: str) -> bool:
        """Tell whether stream maps change the stream's records: never without a MappingWriter."""
        return False

    def fast_map(self, stream: str, columns: list) -> None:
        """Return the stream map the server applies to the stream's copy: none without a MappingWriter."""
        return None

    def envelope(self, stream: str, version: int | None, time_extracted: str) -> tuple[str, str]:
        """Return the text the server puts around each record object: the RECORD message's."""
        return record_envelope(stream, version, time_extracted)

    def write_catalog(self, catalog: dict) -> None:
        """Write a catalog as indented JSON, as --discover prints it."""
        self.raw.write(_dumps(catalog, indent=True))
        self.close()

    def write_schema(self, stream: str, schema: dict, key_properties: list[str], bookmark_properties=None) -> None:
        """Write a SCHEMA message."""
        message = {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": key_properties}
        if bookmark_properties:
            message["bookmark_properties"] = bookmark_properties
        self._write(message)

    def write_activate_version(self, stream: str, version: int) -> None:
        """Write an ACTIVATE_VERSION message."""
        self._write({"type": "ACTIVATE_VERSION", "stream": stream, "version": version})

    def write_state(self, state: dict) -> None:
        """Write a STATE message and flush, so the target sees every record the state covers."""
        self._write({"type": "STATE", "value": state})
        self.raw.flush()

    def flush(self) -> None:
        """Pass what is buffered on to the target now (LOG_BASED, while it streams)."""
        self.raw.flush()

    def write_message(self, message: dict) -> None:
        """Write any other message type (FAST_SYNC_RDS_S3_INFO) as it is."""
        self._write(message)

    def _write(self, message: dict) -> None:
        self.raw.write(_dumps(message))


def _dumps(value: Any, indent: bool = False) -> bytes:
    """Serialise one message as a JSON line with orjson.

    orjson refuses integers beyond 64 bits, which numeric schemas hold (maximum 10**62); those
    rare messages (SCHEMA, the catalog) fall back to the standard library.
    """
    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if indent else 0)
    try:
        return orjson.dumps(value, default=_exact_decimal, option=option)
    except TypeError:
        text = json.dumps(
            value, indent=2 if indent else None, separators=None if indent else (",", ":"), default=_decimal_text
        )
        return text.encode() + b"\n"


def _decimal_text(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def _exact_decimal(value: Any) -> orjson.Fragment:
    """Write a Decimal (a numeric bookmark read from state) as the exact number it is."""
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def record_envelope(stream: str, version: int | None, time_extracted: str) -> tuple[str, str]:
    """Return the text around a record's JSON object in a RECORD line, for the server to splice."""
    prefix = RECORD_PREFIX + orjson.dumps(stream) + b',"record":'
    suffix = b""
    if version is not None:
        suffix += b',"version":' + orjson.dumps(version)
    suffix += b',"time_extracted":' + orjson.dumps(time_extracted) + b"}"
    return prefix.decode(), suffix.decode()


def now_extracted() -> str:
    """Return the current time as Singer's time_extracted text."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
