"""BATCH: a stream's copy written into JSON Lines files, announced by singer-sdk BATCH messages.

The server renders each record object exactly as for a RECORD line, with an empty envelope, so
the lines COPY sends are already the file's lines: `BatchWriter` writes their bytes into the
current file (gzip or plain) and starts a new one every `batch_size` records. Before any other
message (a STATE above all) it closes the files written since the last BATCH message, moves each
to its final name (or uploads it to S3), and writes one BATCH message naming them: a STATE never
follows records that are not in a complete, closed file a BATCH message names.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from tap_postgres.errors import ConfigError, TapPostgresError
from tap_postgres.output import MessageWriter
from tap_postgres.state import restore

DEFAULT_BATCH_SIZE = 10000  # singer-sdk's
# Level 1 of 9: on the bench's wide table 112 MB/s against level 6's 59 MB/s, for files 16% larger
# (0.21 against 0.18 of the JSON), so the tap's own compression stays below the server's rendering.
GZIP_LEVEL = 1
COMPRESSIONS = ("gzip", "none")
_KEYS = {"encoding": {"format", "compression"}, "storage": {"root", "prefix"}}


class BatchFileError(TapPostgresError):
    """Raised when a batch file cannot be written or uploaded."""


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """`batch_config`: where the files go, how they are compressed, how many records each holds."""

    root: str  # file:// or s3:// URL
    prefix: str = ""
    compression: str = "gzip"
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def parse(cls, raw: Any) -> BatchSettings:
        """Validate a `batch_config` object as singer-sdk spells it, raising ConfigError naming the key."""
        if not isinstance(raw, dict):
            raise ConfigError('config key "batch_config" must be an object with "encoding" and "storage"')
        for section, keys in _KEYS.items():
            value = raw.get(section)
            if not isinstance(value, dict):
                raise ConfigError(f'config key "batch_config.{section}" must be an object')
            for key in value:
                if key not in keys:
                    raise ConfigError(f'config key "batch_config.{section}.{key}" is not a batch setting')
        encoding, storage = raw["encoding"], raw["storage"]
        if encoding.get("format", "jsonl") != "jsonl":
            raise ConfigError(
                f'config key "batch_config.encoding.format" is {encoding.get("format")!r}: the tap writes '
                'jsonl batch files only (the server renders JSON): set it to "jsonl"'
            )
        compression = encoding.get("compression") or "gzip"
        if compression not in COMPRESSIONS:
            raise ConfigError(
                f'config key "batch_config.encoding.compression" must be gzip or none, got {compression!r}'
            )
        root = storage.get("root")
        if not isinstance(root, str) or urlparse(root).scheme not in ("file", "s3"):
            raise ConfigError(
                'config key "batch_config.storage.root" must be a file:// or s3:// URL '
                f"(for example file:///var/batches or s3://bucket/path), got {root!r}"
            )
        prefix = storage.get("prefix") or ""
        batch_size = raw.get("batch_size", DEFAULT_BATCH_SIZE)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f'config key "batch_config.batch_size" must be an integer of 1 or more, got {batch_size!r}'
            )
        return cls(root.rstrip("/"), str(prefix), compression, batch_size)

    @property
    def encoding(self) -> dict:
        """The `encoding` of the BATCH messages."""
        return {"format": "jsonl", "compression": self.compression}

    @property
    def suffix(self) -> str:
        """The file name's extension."""
        return ".json.gz" if self.compression == "gzip" else ".json"


class _Storage:
    """Where finished files go: a local directory, or an S3 bucket through boto3 (as singer-sdk's fsspec uses)."""

    def __init__(self, root: str):
        url = urlparse(root)
        self.root = root
        self.scheme = url.scheme
        if self.scheme == "file":
            # file://relative/dir and file:///abs/dir both name a directory
            self.directory = Path(os.path.abspath(unquote(url.netloc + url.path)))
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BatchFileError(
                    f"cannot write batch files under {root}: {exc.strerror}; check batch_config.storage.root"
                ) from None
        else:
            import boto3  # a tenth of a second to import: only s3:// runs need it

            self.bucket, self.key_prefix = url.netloc, url.path.strip("/")
            self.client = boto3.client("s3")

    def new_file(self, name: str) -> tuple[BinaryIO, str]:
        """Open the file that will be `name`; return it and the path it is written at."""
        if self.scheme == "file":
            path = self.directory / f".{name}.part"  # moved to `name` only once complete
            return open(path, "wb"), str(path)
        handle = tempfile.NamedTemporaryFile(prefix="tap-postgres-batch-", suffix=".part", delete=False)
        return handle, handle.name

    def publish(self, written: str, name: str) -> str:
        """Give the complete file at `written` its final name; return its URL for the manifest."""
        if self.scheme == "file":
            final = self.directory / name
            os.replace(written, final)
            return final.as_uri()
        key = f"{self.key_prefix}/{name}" if self.key_prefix else name
        try:
            self.client.upload_file(written, self.bucket, key)
        except Exception as exc:  # botocore's errors are many classes: each is one line for the user
            raise BatchFileError(
                f"could not upload the batch file to s3://{self.bucket}/{key}: {exc}; check batch_config.storage.root "
                "and the AWS credentials, then rerun from the last STATE"
            ) from None
        finally:
            os.unlink(written)
        return f"s3://{self.bucket}/{key}"


class BatchWriter:
    """The writer of one stream's copy in BATCH mode: record lines go to files, every other message
    first closes them and announces them in a BATCH message on the real writer."""

    def __init__(self, writer: MessageWriter, settings: BatchSettings, stream: str):
        self.writer = writer
        self.settings = settings
        self.stream = stream
        self.storage = _Storage(settings.root)
        self.sync_id = f"tap-postgres--{stream}-{uuid.uuid4()}"
        self.files_written = 0
        self._file: BinaryIO | None = None
        self._raw: BinaryIO | None = None
        self._written_at = ""
        self._rows_in_file = 0
        self._manifest: list[str] = []
        self._pending: list[tuple[str, str]] = []  # closed files not yet published: (written at, name)
        self._last_state: dict | None = None

    # a fresh copy's ACTIVATE_VERSION comes before its files (see write_activate_version)
    versions_before_records = True

    def envelope(self, stream: str, version: int | None, time_extracted: str) -> tuple[str, str]:
        """Nothing around the record object: a batch file's line is the record itself."""
        return "", ""

    def write_lines(self, block: bytes) -> None:
        """Write server-rendered record lines, starting a new file every batch_size records."""
        while block:
            if self._file is None:
                self._open()
            room = self.settings.batch_size - self._rows_in_file
            rows = block.count(b"\n")
            if rows <= room:
                self._file.write(block)
                self._rows_in_file += rows
                block = b""
            else:
                cut = _after_line(block, room)
                self._file.write(block[:cut])
                self._rows_in_file += room
                block = block[cut:]
            if self._rows_in_file >= self.settings.batch_size:
                self._close_file()

    def flush_batch(self) -> None:
        """Close the open file and write one BATCH message naming every file since the last one."""
        if self._file is not None:
            self._close_file()
        for written, name in self._pending:
            self._manifest.append(self.storage.publish(written, name))
        self._pending.clear()
        if self._manifest:
            message = {"type": "BATCH", "stream": self.stream, "encoding": self.settings.encoding}
            message["manifest"] = self._manifest
            self.writer.write_message(message)
            self._manifest = []

    def discard(self) -> None:
        """Remove the files of a failed copy that no BATCH message named."""
        if self._file is not None:
            with contextlib.suppress(BatchFileError):
                self._close_file()
        for written, _ in self._pending:
            with contextlib.suppress(OSError):
                os.unlink(written)
        self._pending.clear()

    def write_state(self, state: dict) -> None:
        """Announce the files, then write the STATE that covers them.

        The caller has already moved the bookmark past the files' rows: if they cannot be
        announced, the state goes back to the last one written, which the error's STATE repeats.
        """
        try:
            self.flush_batch()
        except BaseException:
            if self._last_state is not None:
                restore(state, self._last_state)
            raise
        self.writer.write_state(state)
        self._last_state = copy.deepcopy(state)

    def write_activate_version(self, stream: str, version: int) -> None:
        """Write ACTIVATE_VERSION before the copy's first file only, as singer-sdk taps do: the rows a
        target loads from files carry no version, so one after them would delete them all."""
        if self.files_written == 0:
            self.writer.write_activate_version(stream, version)

    def write_message(self, message: dict) -> None:
        """Announce the files, then write any other message."""
        self.flush_batch()
        self.writer.write_message(message)

    def _open(self) -> None:
        self.files_written += 1
        name = f"{self.settings.prefix}{self.sync_id}-{self.files_written}{self.settings.suffix}"
        try:
            self._raw, self._written_at = self.storage.new_file(name)
        except OSError as exc:
            raise BatchFileError(
                f"cannot write batch files under {self.settings.root}: {exc.strerror}; check batch_config.storage.root"
            ) from None
        self._name = name
        self._file = (
            gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            if self.settings.compression == "gzip"
            else self._raw
        )
        self._rows_in_file = 0

    def _close_file(self) -> None:
        try:
            self._file.close()
            if self._raw is not self._file:
                self._raw.close()
        except OSError as exc:
            raise BatchFileError(f"cannot finish batch file {self._name}: {exc.strerror}") from None
        self._pending.append((self._written_at, self._name))
        self._file = self._raw = None


def _after_line(block: bytes, lines: int) -> int:
    """Return the offset just after the `lines`-th line of `block` (runs once per file, not per row)."""
    end = 0
    for _ in range(lines):
        end = block.index(b"\n", end) + 1
    return end
