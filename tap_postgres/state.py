"""STATE in pipelinewise's layout: `currently_syncing` and per-stream bookmarks.

Bookmark keys, per method:
- FULL_TABLE: `version`, `last_replication_method`; while a table is part-copied also
  `copied_blocks` (per heap relation, the table or each leaf partition: its `filenode` and the
  block ranges copied, compactly: every block below `below`, and the `ranges` [start, end) above
  it) and `snapshot_xmin` (the oldest transaction the first snapshot of the copy did not see).
  An earlier version of this tap wrote `resume_key` (the primary key of the last copied row)
  instead: such a copy is done again under the same version.
- INCREMENTAL: `version`, `last_replication_method`, `replication_key`, `replication_key_value`.
- LOG_BASED: `version`, `last_replication_method`, `lsn` (an integer, as pipelinewise writes it:
  changes of transactions ending at or before it have been emitted); during the initial copy
  also FULL_TABLE's `resume_key`, or pipelinewise's `xmin`.
A pipelinewise `xmin` bookmark (an interrupted FULL_TABLE of pipelinewise) is honoured by copying
the table again under the same version.

Every bookmark this tap writes also holds its `origin` (a key pipelinewise ignores): the server's
system identifier, the database's oid and name and, for LOG_BASED, the slot. A bookmark from
another server, database or slot is refused: its positions mean nothing here, and following
them would skip changes for good. A bookmark without one (pipelinewise's) is taken as it is.

A LOG_BASED bookmark read through pgoutput also holds `publication_membership`, a token of its
table's membership in the publication (publication.membership_tokens): a different token at the
next run means the table was out of the publication for a while, and the stream is copied anew.
"""

from __future__ import annotations

import copy
import dataclasses
import decimal
import json
import logging
import re
from typing import Any

from tap_postgres.errors import StateError

LOGGER = logging.getLogger("tap-postgres")

# Integer bookmarks and the values they may take: a version is a bigint at the targets, xids and
# WAL positions are unsigned 64-bit numbers on the server.
_INTEGER_LIMITS = {"version": 2**63, "snapshot_xmin": 2**64, "xmin": 2**64, "lsn": 2**64}
# What a key value in a bookmark may be: a JSON scalar other than null (booleans are ints)
_SCALARS = (str, int, decimal.Decimal, float)
# The bookmark key of a LOG_BASED stream's membership token in pgoutput's publication
MEMBERSHIP_KEY = "publication_membership"
_FIX = "fix it, or remove the stream's bookmark from the state to sync it anew"
_TIMESTAMP_TEXT = re.compile(r"\d{4,}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d){0,2}")


def parse_state(raw: Any) -> dict:
    """Return a state dict in pipelinewise's layout, or raise StateError naming what is wrong."""
    if raw in (None, {}):
        return {"bookmarks": {}, "currently_syncing": None}
    if isinstance(raw, dict) and raw.get("type") == "STATE" and "value" in raw:
        raw = raw["value"]  # a STATE message saved whole
    if not isinstance(raw, dict):
        raise StateError('the state file must hold a JSON object with a "bookmarks" object')
    bookmarks = raw.get("bookmarks", {})
    if not isinstance(bookmarks, dict) or not all(isinstance(value, dict) for value in bookmarks.values()):
        raise StateError('"bookmarks" in the state file must map each stream id to an object: fix or remove the file')
    currently_syncing = raw.get("currently_syncing")
    if currently_syncing is not None and not isinstance(currently_syncing, str):
        raise StateError('"currently_syncing" in the state file must be a stream id or null')
    state = dict(raw)
    state["bookmarks"] = {stream: dict(bookmark) for stream, bookmark in bookmarks.items()}
    state["currently_syncing"] = currently_syncing
    return state


def check_bookmark(stream_id: str, saved: dict) -> None:
    """Raise StateError naming the stream, the key and the value when a bookmark value has the wrong shape.

    Whether a key value is a value of its column's type is the server's to say (sync.preflight).
    """
    for key, limit in _INTEGER_LIMITS.items():
        value = saved.get(key)
        if value is not None and key != "lsn" and not _is_integer_below(value, limit):
            raise StateError(
                f'{stream_id}: the state\'s "{key}" is {shown(value)}, not an integer from 0 to {limit - 1}: {_FIX}'
            )
    parse_lsn(stream_id, saved.get("lsn"))
    for key in ("replication_key", "last_replication_method"):
        if saved.get(key) is not None and not isinstance(saved[key], str):
            raise StateError(f'{stream_id}: the state\'s "{key}" is {shown(saved[key])}, not a name: {_FIX}')
    value = saved.get("replication_key_value")
    if value is not None and not _is_scalar(value):
        raise StateError(f'{stream_id}: the state\'s "replication_key_value" is {shown(value)}, not one value: {_FIX}')
    resume_key = saved.get("resume_key")
    if resume_key is not None and not (
        isinstance(resume_key, list) and resume_key and all(_is_scalar(item) for item in resume_key)
    ):
        raise StateError(
            f'{stream_id}: the state\'s "resume_key" is {shown(resume_key)}, not a list of key values: {_FIX}'
        )
    copied = saved.get("copied_blocks")
    if copied is not None and not (
        isinstance(copied, dict) and all(CopiedBlocks.is_bookmark(value) for value in copied.values())
    ):
        raise StateError(
            f'{stream_id}: the state\'s "copied_blocks" is {shown(copied)}, not an object of relations, each '
            f'{{"filenode": n, "below": n, "ranges": [[start, end], ...]}}: {_FIX}'
        )


def _is_integer_below(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit


def _is_scalar(value: Any) -> bool:
    # no text holds a NUL on the server: such a value cannot be one of a key's
    return isinstance(value, _SCALARS) and not (isinstance(value, str) and "\x00" in value)


def shown(value: Any) -> str:
    """Return a value as the state file spells it, cut short, for an error message."""
    text = _as_json(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_json(value: Any) -> str:
    if isinstance(value, decimal.Decimal):
        return str(value)  # a number with a fraction, as read: not a string
    if isinstance(value, list):
        return "[" + ", ".join(_as_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_as_json(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a bookmark belongs: a server (its system identifier), a database (its oid) and, for LOG_BASED, a slot."""

    system_identifier: str | None  # None where the tap's user may not read pg_control_system()
    database_oid: int
    dbname: str
    slot: str | None = None

    def to_bookmark(self) -> dict:
        """Return the form kept in a bookmark's `origin`."""
        kept = {"system_identifier": self.system_identifier, "database_oid": self.database_oid, "dbname": self.dbname}
        return {**kept, "slot": self.slot} if self.slot is not None else kept

    @classmethod
    def from_bookmark(cls, stream_id: str, value: Any) -> Origin:
        """Read a bookmark's `origin`, or raise StateError naming the stream."""
        fields = {"system_identifier": (str, type(None)), "database_oid": int, "dbname": str, "slot": (str, type(None))}
        if not (
            isinstance(value, dict)
            and {"database_oid", "dbname"} <= value.keys() <= fields.keys()
            and all(isinstance(value[key], fields[key]) for key in value)
            and not isinstance(value["database_oid"], bool)
        ):
            raise StateError(
                f'{stream_id}: the state\'s "origin" is {shown(value)}, not the server, database and slot this tap '
                'records: restore the state the target saved, or remove "origin" from the stream\'s bookmark'
            )
        return cls(**value)

    def describe(self) -> str:
        """Return this origin as an error message names it."""
        server = f"server {self.system_identifier}" if self.system_identifier else "a server"
        slot = f', replication slot "{self.slot}"' if self.slot else ""
        return f'database "{self.dbname}" (oid {self.database_oid}) on {server}{slot}'

    def differs_from(self, saved: Origin) -> bool:
        """Tell whether a bookmark recorded at `saved` cannot belong here (what either side does not know is not compared)."""
        return (
            (
                None not in (self.system_identifier, saved.system_identifier)
                and self.system_identifier != saved.system_identifier
            )
            or self.database_oid != saved.database_oid
            or (None not in (self.slot, saved.slot) and self.slot != saved.slot)
        )


def check_origin(stream_id: str, saved: dict, here: Origin) -> None:
    """Raise StateError when the stream's bookmark was written for another server, database or slot."""
    if saved.get("origin") is None:
        return  # pipelinewise's bookmarks, and this tap's before it kept one
    there = Origin.from_bookmark(stream_id, saved["origin"])
    if here.differs_from(there):
        raise StateError(
            f"{stream_id}: the state was written for {there.describe()}, and this run reads {here.describe()}: "
            "a state belongs to one pipeline; give this one its own state file (or none, to sync anew). If the "
            'database was moved or restored and the state is right for it, remove "origin" from the stream\'s '
            "bookmark"
        )


def claim_bookmarks(state: dict, stream_ids: list[str], origin: Origin) -> None:
    """Refuse the streams' bookmarks if any belongs elsewhere, then record in each where it belongs now."""
    for stream_id in stream_ids:
        check_origin(stream_id, bookmark(state, stream_id), origin)
    for stream_id in stream_ids:
        bookmark(state, stream_id)["origin"] = origin.to_bookmark()


def saved_position(raw_state: Any, emitted: dict[str, int], origin: Origin) -> int | None:
    """Return the lowest `lsn` a state the target saved holds for these streams, or None when it cannot tell.

    `raw_state` is the state file as read now (files.PolledJsonFile), the one a target's runner
    (PipelineWise) rewrites as the target commits: a file being rewritten, unreadable or malformed
    (None), or missing a stream's `lsn`, tells nothing yet. A state that cannot be what the target
    saved of this run's output raises StateError: a bookmark of another origin, or an `lsn` past
    the one this run emitted for the stream (`emitted`).
    """
    if raw_state is None:
        return None
    try:
        state = parse_state(raw_state)
        positions = {stream_id: bookmark_lsn(state, stream_id) for stream_id in emitted}
    except StateError:
        return None
    if not positions or None in positions.values():
        return None
    for stream_id, lsn in positions.items():
        check_origin(stream_id, state["bookmarks"][stream_id], origin)
        if lsn > emitted[stream_id]:
            raise StateError(
                f'{stream_id}: the state file\'s "lsn" {int_to_lsn(lsn)} is past what this run emitted '
                f"({int_to_lsn(emitted[stream_id])}), so no target saved it from this run"
            )
    return min(positions.values())


def set_currently_syncing(state: dict, stream_id: str | None) -> None:
    """Record the stream being synced, or None once every stream's turn is over (pipelinewise's key)."""
    state["currently_syncing"] = stream_id


def restore(state: dict, saved: dict) -> None:
    """Put `state` back as it was when `saved`, a deep copy of it, was taken."""
    state.clear()
    state.update(copy.deepcopy(saved))


def bookmark(state: dict, stream_id: str) -> dict:
    """Return the stream's bookmark, created empty when missing (it is the state's own dict)."""
    return state["bookmarks"].setdefault(stream_id, {})


def reset_on_method_change(state: dict, stream_id: str, method: str, replication_key: str | None) -> None:
    """Forget a stream's bookmark when its replication method or INCREMENTAL key changed, like pipelinewise."""
    current = bookmark(state, stream_id)
    last_method = current.get("last_replication_method")
    if last_method is not None and last_method != method:
        current.clear()
    elif method == "INCREMENTAL" and current.get("replication_key") != replication_key:
        current.clear()
    current["last_replication_method"] = method


def bookmark_lsn(state: dict, stream_id: str) -> int | None:
    """Return a stream's `lsn` bookmark as an int (pipelinewise writes ints; `X/Y` text is read too)."""
    return parse_lsn(stream_id, state["bookmarks"].get(stream_id, {}).get("lsn"))


def parse_lsn(stream_id: str, value: Any) -> int | None:
    """Return an `lsn` bookmark value as an int, or raise StateError naming the stream and the value."""
    if value is None or _is_integer_below(value, _INTEGER_LIMITS["lsn"]):
        return value
    if isinstance(value, str) and re.fullmatch("[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", value):
        return lsn_to_int(value)
    raise StateError(f'{stream_id}: the state\'s "lsn" is {shown(value)}, not a WAL position: {_FIX}')


def lsn_to_int(lsn: str) -> int:
    """Return the integer of an `X/Y` LSN."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(lsn: int) -> str:
    """Return the `X/Y` text of an integer LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclasses.dataclass
class CopiedBlocks:
    """The blocks of one relation a copy has written: all below `below`, and the `ranges` [start, end) above it.

    Ranges end as sessions finish them, in any order; what is left above `below` is at most a few
    ranges per session, so the bookmark stays small however large the table.
    """

    filenode: int
    below: int = 0
    ranges: list[list[int]] = dataclasses.field(default_factory=list)

    @staticmethod
    def is_bookmark(value: Any) -> bool:
        """Tell whether `value` has the shape `to_bookmark` writes."""
        if not (isinstance(value, dict) and value.keys() == {"filenode", "below", "ranges"}):
            return False
        numbers = [value["filenode"], value["below"]]
        if not isinstance(value["ranges"], list):
            return False
        for item in value["ranges"]:
            if not (isinstance(item, list) and len(item) == 2 and _all_counts(item) and item[0] < item[1]):
                return False
        return _all_counts(numbers)

    @classmethod
    def from_bookmark(cls, value: dict) -> CopiedBlocks:
        """Read the form `to_bookmark` writes (check_bookmark has checked its shape)."""
        return cls(value["filenode"], value["below"], [list(item) for item in value["ranges"]])

    def to_bookmark(self) -> dict:
        """Return the form kept in the bookmark."""
        return {"filenode": self.filenode, "below": self.below, "ranges": [list(item) for item in self.ranges]}

    def add(self, start: int, end: int) -> None:
        """Record blocks `start` to `end - 1` as copied, merging what touches."""
        merged: list[list[int]] = []
        for item in sorted([*self.ranges, [start, end]]):
            if merged and item[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], item[1])
            else:
                merged.append(list(item))
        while merged and merged[0][0] <= self.below:
            self.below = max(self.below, merged.pop(0)[1])
        self.ranges = merged

    def intervals(self) -> list[tuple[int, int]]:
        """Return the copied blocks as [start, end) intervals, in block order."""
        low = [(0, self.below)] if self.below > 0 else []
        return low + [(start, end) for start, end in self.ranges]

    def missing(self, blocks: int, per_range: int) -> list[tuple[int, int]]:
        """Return the ranges of at most `per_range` blocks, below `blocks`, not copied yet, in block order."""
        gaps, position = [], self.below
        for start, end in self.ranges:
            if start > position:
                gaps.append((position, min(start, blocks)))
            position = max(position, end)
        gaps.append((position, blocks))
        return [
            (first, min(first + per_range, end))
            for start, end in gaps
            if start < end
            for first in range(start, end, per_range)
        ]


def _all_counts(values: list) -> bool:
    return all(_is_integer_below(value, 2**63) for value in values)


class StreamBookmark:
    """A stream's bookmark: the one place every sync (and the catalog streams) asks what it resumes, tells what it did."""

    def __init__(self, state: dict, stream_id: str):
        self.state = state
        self.stream_id = stream_id

    @property
    def saved(self) -> dict:
        """The bookmark in the state (read it; only this class changes it)."""
        return bookmark(self.state, self.stream_id)

    def begin_copy(self, fresh_version: int) -> tuple[int, bool, bool]:
        """Start or resume a copy: return its version, whether the stream never had one, and whether it resumes.

        A copy resumes under the bookmark's version when it was interrupted: `copied_blocks` are
        there, or the marker LOG_BASED leaves (`resume_key`), or pipelinewise's `xmin`. Only the
        ranges recorded here are skipped; an `xmin`, or an earlier version's `resume_key`, has the
        copy done again whole.
        """
        saved = self.saved
        first_run = "version" not in saved
        pipelinewise_xmin = saved.pop("xmin", None) is not None
        resumes = not first_run and ("copied_blocks" in saved or "resume_key" in saved or pipelinewise_xmin)
        if pipelinewise_xmin or saved.get("resume_key") is not None or not resumes:
            if saved.get("resume_key") is not None:
                LOGGER.info(
                    "%s: the state holds a key to resume after, from an earlier version: copying again", self.stream_id
                )
                saved["resume_key"] = None  # still marks a LOG_BASED copy as unfinished
            saved.pop("copied_blocks", None)
            saved.pop("snapshot_xmin", None)
        version = saved["version"] if resumes else fresh_version
        saved["version"] = version
        return version, first_run, resumes

    @property
    def copy_in_progress(self) -> bool:
        """Tell whether a copy by block ranges was interrupted (an INCREMENTAL first run's resumes from it)."""
        return "copied_blocks" in self.saved

    @property
    def snapshot_xmin(self) -> int | None:
        """The oldest transaction the copy's first snapshot did not see, or None before one is recorded."""
        return self.saved.get("snapshot_xmin")

    def record_snapshot_xmin(self, xmin: int) -> None:
        """Keep the first snapshot's xmin; a resumed copy keeps the first run's, the older one."""
        self.saved.setdefault("snapshot_xmin", xmin)

    def copied_blocks(self, relation: str, filenode: int) -> CopiedBlocks:
        """Return the blocks of `relation` already copied; none, with a warning, when the relation was rewritten since."""
        kept = self.saved.setdefault("copied_blocks", {})
        saved = kept.get(relation)
        if saved is not None and saved["filenode"] != filenode:
            LOGGER.warning(
                "%s: %s was rewritten since the interrupted copy (VACUUM FULL, CLUSTER or the like gave it a new "
                "file), so the rows' places changed: copying it again from its first block",
                self.stream_id,
                relation,
            )
            saved = None
        copied = CopiedBlocks.from_bookmark(saved) if saved is not None else CopiedBlocks(filenode)
        kept[relation] = copied.to_bookmark()
        return copied

    def add_copied_blocks(self, relation: str, start: int, end: int) -> None:
        """Record that every row of blocks `start` to `end - 1` of `relation` has been written."""
        kept = self.saved["copied_blocks"]
        copied = CopiedBlocks.from_bookmark(kept[relation])
        copied.add(start, end)
        kept[relation] = copied.to_bookmark()

    def forget_copied_blocks(self) -> None:
        """Drop the record of copied blocks, so the copy starts again from the first block."""
        self.saved.pop("copied_blocks", None)

    # LOG_BASED: the WAL position, the copy's snapshot, the table's recorded columns

    def set_lsn(self, lsn: int) -> None:
        """Record that every change before `lsn` has been written (as pipelinewise's integer)."""
        self.saved["lsn"] = lsn

    def set_version(self, version: int) -> None:
        """Record the table version the stream's records carry from now on."""
        self.saved["version"] = version

    def ensure_version(self, fresh_version: int) -> None:
        """Give a bookmark without a version one: records always carry one."""
        self.saved.setdefault("version", fresh_version)

    def set(self, key: str, value: Any) -> None:
        """Record one of the LOG_BASED facts kept beside the position (the publication membership, the columns)."""
        self.saved[key] = value

    def begin_initial_copy(self, lsn: int, snapshot: dict) -> None:
        """Record an initial copy's start: the position its changes follow, its snapshot, and that it is unfinished."""
        saved = self.saved
        saved["lsn"] = lsn
        saved["copy_snapshot"] = snapshot
        saved["resume_key"] = None  # marks the copy as unfinished until it ends

    def copy_again(self, version: int) -> None:
        """Have the next copy start from the beginning under `version`, the WAL position kept."""
        saved = self.saved
        saved["version"] = version
        saved["resume_key"] = None  # an unfinished copy, from the start
        saved.pop("snapshot_xmin", None)

    def forget_position(self) -> None:
        """Drop the WAL position and any copy in flight: the stream is copied anew, as if it were new."""
        for key in ("lsn", "copy_snapshot", "resume_key", "xmin", "snapshot_xmin"):
            self.saved.pop(key, None)

    def pass_copy_snapshot(self) -> None:
        """Forget the copy's snapshot once the position is past it: the lsn rule then suffices."""
        self.saved.pop("copy_snapshot", None)

    def begin_incremental(self, fresh_version: int, replication_key: str) -> int:
        """Start an INCREMENTAL run: keep the bookmark's version (or take `fresh_version`) and record the key; return the version."""
        saved = self.saved
        version = saved.get("version") or fresh_version
        saved["version"] = version
        saved["replication_key"] = replication_key
        return version

    @property
    def replication_key_value(self):
        """The INCREMENTAL bookmark: the greatest key emitted so far, or None before the first run."""
        return self.saved.get("replication_key_value")

    def advance_replication_key(self, value) -> None:
        """Record that every row with a key up to `value` has been written."""
        self.saved["replication_key_value"] = value

    def version_for_export(self, fresh_version: int, incremental: bool) -> int:
        """Return the version of a fast_sync_rds export: INCREMENTAL keeps the bookmark's, FULL_TABLE takes a new one."""
        return (self.saved.get("version") if incremental else None) or fresh_version

    def record_export(self, info: dict, replication_key: str | None, newest) -> None:
        """Record a fast_sync_rds export: its version and facts, and the INCREMENTAL key it reached (if any)."""
        saved = self.saved
        saved["version"] = info["version"]
        saved["fast_sync_rds_s3_info"] = info
        if newest is not None:
            saved["replication_key"] = replication_key
            saved["replication_key_value"] = newest

    def end_copy(self) -> None:
        """Drop what only a part-copied table needs."""
        for key in ("resume_key", "snapshot_xmin", "copied_blocks"):
            self.saved.pop(key, None)

    # catalog streams (tap_postgres.metadata): a snapshot's version, statement usage's counters per database

    def begin_snapshot(self, fresh_version: int) -> bool:
        """Record `fresh_version` as the version of the stream's new full snapshot; return whether it never had one."""
        first_run = "version" not in self.saved
        self.saved["version"] = fresh_version
        return first_run

    def check_usage_counters(self) -> None:
        """Raise StateError naming the stream and the database when the statement usage counters have the wrong shape."""
        databases = self.saved.get("databases", {})
        if not isinstance(databases, dict):
            raise StateError(f'{self.stream_id}: the state\'s "databases" is {shown(databases)}, not an object: {_FIX}')
        for database, saved in databases.items():
            if not _is_usage_counters(saved):
                raise StateError(
                    f'{self.stream_id}: the state\'s counters of database "{database}" are {shown(saved)}, not '
                    f'{{"stats_reset": text, "observed_at": text, "counters": {{entry: [calls, rows, time, time, '
                    f"blocks, blocks]}}}}: {_FIX}"
                )

    def usage_counters(self, database: str) -> dict:
        """Return the statement usage counters the last run kept for `database` (empty before its first)."""
        return self.saved.get("databases", {}).get(database, {})

    def record_usage_counters(self, database: str, counters: dict) -> None:
        """Keep `database`'s statement usage counters as read now: the next run's deltas start from them.

        Each database's session records its own; setdefault and an item assignment need no lock.
        """
        self.saved.setdefault("databases", {})[database] = counters

    def forget(self) -> None:
        """Drop the stream's bookmark: its next run starts from nothing."""
        self.state["bookmarks"].pop(self.stream_id, None)


def _is_usage_counters(saved: Any) -> bool:
    """Tell whether one database's statement usage bookmark has the shape metadata.usage writes."""
    if not (isinstance(saved, dict) and saved.keys() <= {"stats_reset", "observed_at", "counters"}):
        return False
    if not all(_is_timestamp_text(saved.get(key)) for key in ("stats_reset", "observed_at")):
        return False
    counters = saved.get("counters", {})
    return isinstance(counters, dict) and all(
        isinstance(values, list)
        and len(values) == 6
        and all(_is_integer_below(values[index], 2**64) for index in (0, 1, 4, 5))
        and all(_is_number_text(values[index]) for index in (2, 3))
        for values in counters.values()
    )


def _is_timestamp_text(value: Any) -> bool:
    # a timestamptz as the tap's sessions print it (ISO, UTC), or none yet
    return value is None or (isinstance(value, str) and _TIMESTAMP_TEXT.fullmatch(value) is not None)


def _is_number_text(value: Any) -> bool:
    # the times are kept as text, as the server renders them; a number read from STATE is taken too
    if isinstance(value, (int, decimal.Decimal, float)) and not isinstance(value, bool):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)
