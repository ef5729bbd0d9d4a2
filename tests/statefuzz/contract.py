"""The contract every run on a fuzzed STATE must keep, as checks that return the problems they find.

A run ends in exactly one of:
- a correct run: exit 0, each RECORD valid against its stream's SCHEMA and equal to a row of the
  table, INCREMENTAL emitting every row at or after a bookmark that is a valid value of its key,
  and a last STATE whose `version`s are 64-bit non-negative ints and whose LOG_BASED `lsn`s are
  WAL positions the server has written;
- a refusal: a non-zero exit whose stderr ends with one line `tap-postgres: error: ...`.
Never a traceback, and never a moved slot: a refusal leaves confirmed_flush_lsn where it was,
and no run moves it past the WAL end as of before the run, nor past the lowest `lsn` the input
STATE held for the LOG_BASED streams when every one of those was a valid WAL position.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from decimal import Decimal
from typing import Any

import psycopg2
from generative.runner import Problem, Run, validate_record, validators_of
from psycopg2 import sql

from statefuzz.tables import CAST, SCHEMA, SESSION_SQL, TABLES, as_record_value, rows_of

ERROR_PREFIX = "tap-postgres: error:"
VERSION_RANGE = range(0, 2**63)  # a table version is a bigint in every target that stores it
LSN_PATTERN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


# ------------------------------------------------------------------------------------- the slot


@dataclasses.dataclass(frozen=True)
class SlotPosition:
    """The slot's confirmed_flush_lsn and the server's pg_current_wal_lsn(), as integers."""

    confirmed_flush: int
    wal: int


def wait_until_idle(conn, slot: str, seconds: float = 5.0) -> bool:
    """Wait for the slot's walsender to go (a run's replication session ends just after it); True if it did."""
    deadline = time.monotonic() + seconds
    while True:
        with conn.cursor() as cur:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if not cur.fetchone()[0]:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def release(conn, slot: str) -> None:
    """End a session left holding the slot (a crashed run's), so the next example can use it."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s AND active_pid IS NOT NULL",
            (slot,),
        )
    wait_until_idle(conn, slot)


def slot_position(conn, slot: str) -> SlotPosition:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint, (pg_current_wal_lsn() - '0/0')::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        return SlotPosition(*cur.fetchone())


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# ------------------------------------------------------------------------------------- the input state


def input_bookmarks(state: Any) -> dict:
    """The bookmarks of an input state as the tap should read them (a saved STATE message unwrapped)."""
    if isinstance(state, dict) and state.get("type") == "STATE" and "value" in state:
        state = state["value"]
    bookmarks = state.get("bookmarks") if isinstance(state, dict) else None
    return bookmarks if isinstance(bookmarks, dict) else {}


def wal_position(value: Any, wal: int) -> int | None:
    """The value as an `lsn` the server has reached (an int or `X/Y` text), or None when it is none."""
    if isinstance(value, str) and LSN_PATTERN.fullmatch(value):
        high, low = value.split("/")
        value = (int(high, 16) << 32) + int(low, 16)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= wal:
        return value
    return None


def slot_bound(state: Any, log_based: list[str], before: SlotPosition) -> int:
    """How far the run may confirm the slot: the lowest input `lsn` of the LOG_BASED streams, if all are valid.

    A bookmark of another method is reset by the tap, so its `lsn` does not count; a stream with
    none confirms nothing. With an invalid `lsn` the only bound is the WAL end before the run.
    """
    bookmarks = input_bookmarks(state)
    saved = []
    for stream in log_based:
        bookmark = bookmarks.get(stream)
        if not isinstance(bookmark, dict) or "lsn" not in bookmark or bookmark["lsn"] is None:
            continue
        if bookmark.get("last_replication_method") not in (None, "LOG_BASED"):
            continue  # the tap resets a bookmark another method left (a missing or null method is no other)
        lsn = wal_position(bookmark["lsn"], before.wal)
        if lsn is None:
            return before.wal
        saved.append(lsn)
    return max(before.confirmed_flush, min(saved)) if saved else before.confirmed_flush


def slot_problems(run: Run, state: Any, log_based: list[str], before: SlotPosition, after: SlotPosition):
    """The slot did not move on a refusal, nor past the WAL end, nor past the input's lowest valid `lsn`."""
    moved = f"confirmed_flush_lsn {lsn_text(before.confirmed_flush)} -> {lsn_text(after.confirmed_flush)}"
    if run.failed and after.confirmed_flush != before.confirmed_flush:
        return [Problem("a refused run moved the slot", f"{moved} (WAL end before the run {lsn_text(before.wal)})")]
    if after.confirmed_flush > before.wal:
        return [Problem("the slot moved past the WAL end", f"{moved}, WAL end before the run {lsn_text(before.wal)}")]
    bound = slot_bound(state, log_based, before)
    if after.confirmed_flush > bound:
        return [
            Problem(
                "the slot moved past the lowest lsn of the state",
                f"{moved}, lowest valid input lsn {lsn_text(bound)}",
            )
        ]
    return []


# ------------------------------------------------------------------------------------- refusals


def crash_problems(run: Run) -> list[Problem]:
    """A traceback, escaped from the CLI or printed to stderr, is never an answer."""
    if run.crash:
        return [Problem(f"traceback: {run.failure_kind()} in {innermost_tap_frame(run.crash)}", run.failure())]
    if "Traceback" in run.stderr:
        tail = run.stderr[run.stderr.index("Traceback") :].strip().splitlines()
        return [Problem(f"traceback on stderr: {tail[-1][:60]}", "\n".join(tail[-12:]))]
    return []


def innermost_tap_frame(traceback_text: str) -> str:
    """`module:function` of the deepest tap_postgres frame of a traceback: where the tap broke."""
    frames = re.findall(r'File ".*?(tap_postgres/[^"]+)", line \d+, in (\S+)', traceback_text)
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else "?"


def refusal_problems(run: Run) -> list[Problem]:
    """A refusal ends stderr with exactly one line `tap-postgres: error: <cause>: <fix>`."""
    lines = run.stderr.rstrip("\n").split("\n")
    if not lines[-1].startswith(ERROR_PREFIX):
        return [
            Problem(f"exit {run.code} without a last line {ERROR_PREFIX}", "stderr ends:\n" + "\n".join(lines[-8:]))
        ]
    if run.stderr.count(ERROR_PREFIX) > 1:
        return [Problem("more than one error line", "\n".join(lines[-8:]))]
    return []


# ------------------------------------------------------------------------------------- correct runs


@dataclasses.dataclass
class Selected:
    """A selected stream: its method and INCREMENTAL key."""

    stream: str
    method: str
    replication_key: str | None = None


def origin_of(conn, slot: str) -> dict:
    """The bookmark `origin` the tap writes for this server, database and slot."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT system_identifier::text, d.oid, d.datname FROM pg_control_system(), pg_database AS d "
            "WHERE d.datname = current_database()"
        )
        system_identifier, oid, name = cur.fetchone()
    return {"system_identifier": system_identifier, "database_oid": oid, "dbname": name, "slot": slot}


def foreign_origin_problems(conn, selected: list[Selected], state: Any, slot: str) -> list[Problem]:
    """A run that went on from a bookmark of another server, database or slot (one it did not reset)."""
    here, problems = origin_of(conn, slot), []
    for chosen in selected:
        saved = input_bookmarks(state).get(chosen.stream)
        origin = saved.get("origin") if isinstance(saved, dict) else None
        if not isinstance(origin, dict) or _reset_by_method(saved, chosen):
            continue
        elsewhere = [
            key
            for key in ("system_identifier", "database_oid", "slot")
            if origin.get(key) is not None
            and here[key] != origin[key]
            and (key != "slot" or chosen.method == "LOG_BASED")
        ]
        if elsewhere:
            problems.append(
                Problem(f"a bookmark of another {elsewhere[0]} was followed", f"{chosen.stream}: {origin!r}")
            )
    return problems


def _reset_by_method(saved: dict, chosen: Selected) -> bool:
    """Whether the tap forgets this bookmark, as pipelinewise does, for a change of method or INCREMENTAL key."""
    last_method = saved.get("last_replication_method")
    if last_method is not None and last_method != chosen.method:
        return True
    return chosen.method == "INCREMENTAL" and saved.get("replication_key") != chosen.replication_key


def correct_run_problems(run: Run, conn, selected: list[Selected], state: Any, wal_after: int) -> list[Problem]:
    """Records valid and equal to rows, INCREMENTAL complete from a valid bookmark, the last STATE sane."""
    by_stream = {s.stream: s for s in selected}
    try:
        messages = [json.loads(line, parse_float=Decimal) for line in run.lines]
    except ValueError as exc:
        return [Problem("stdout holds a line that is not JSON", str(exc))]
    rows = {stream: rows_of(conn, TABLES[stream]) for stream in by_stream}
    problems, validators, emitted_keys = [], {}, {stream: set() for stream in by_stream}
    for line, message in zip(run.lines, messages, strict=True):
        kind, stream = message.get("type"), message.get("stream")
        if kind in ("RECORD", "SCHEMA", "ACTIVATE_VERSION") and stream not in by_stream:
            problems.append(Problem(f"{kind} of a stream not selected", line[:500]))
            continue
        if kind == "SCHEMA":
            validators[stream] = validators_of(line)
        elif kind == "ACTIVATE_VERSION":
            problems += version_problems(f"ACTIVATE_VERSION of {stream}", message.get("version"))
        elif kind == "RECORD":
            if "version" in message:
                problems += version_problems(f"RECORD of {stream}", message["version"])
            table = TABLES[stream]
            if stream not in validators:
                problems.append(Problem("RECORD before its SCHEMA", line[:500]))
                continue
            problems += record_validity_problems(stream, line, validators[stream])
            record = message["record"]
            values = {name: value for name, value in record.items() if not name.startswith("_sdc_")}
            key = tuple(values.get(name) for name in table.primary_key)
            emitted_keys[stream].add(key)
            if rows[stream].get(key) != values:
                problems.append(
                    Problem(
                        f"a record is not a row of the table ({by_stream[stream].method})",
                        f"{stream}: emitted {values!r}, the table holds {rows[stream].get(key)!r}",
                    )
                )
    for chosen in selected:
        if chosen.method == "INCREMENTAL":
            problems += incremental_problems(conn, chosen, state, emitted_keys[chosen.stream])
    states = [message["value"] for message in messages if message.get("type") == "STATE"]
    problems += last_state_problems(states[-1] if states else None, selected, wal_after)
    return problems


def record_validity_problems(stream: str, line: str, validators: dict) -> list[Problem]:
    """The record validates under draft 4 and 2020-12, its numbers and the schema's read as floats and as Decimals."""
    problems = []
    for parse_float in (float, Decimal):
        record = json.loads(line, parse_float=parse_float)["record"]
        wanted = {key: v for key, v in validators.items() if (key[1] == "Decimal") == (parse_float is Decimal)}
        for problem in validate_record(wanted, record, dict(TABLES[stream].columns)):
            problems.append(Problem(problem.kind, f"{stream}: {problem.detail}\n{line[:500]}"))
    return problems


def version_problems(where: str, version: Any) -> list[Problem]:
    if isinstance(version, int) and not isinstance(version, bool) and version in VERSION_RANGE:
        return []
    return [Problem("a version that is no 64-bit non-negative int", f"{where}: version {version!r}")]


def incremental_problems(conn, chosen: Selected, state: Any, emitted: set[tuple]) -> list[Problem]:
    """Every row whose key is >= a valid bookmark was emitted (a bookmark the tap reset asks for all rows)."""
    bookmark = input_bookmarks(state).get(chosen.stream)
    if not isinstance(bookmark, dict) or "replication_key_value" not in bookmark:
        return []
    value = bookmark["replication_key_value"]
    wanted = rows_from(conn, chosen, value)
    if wanted is None or wanted <= emitted:
        return []
    return [
        Problem(
            "INCREMENTAL misses rows at or after a valid bookmark",
            f"{chosen.stream} on {chosen.replication_key} from {value!r}: rows not emitted {sorted(wanted - emitted)}",
        )
    ]


def rows_from(conn, chosen: Selected, value: Any) -> set[tuple] | None:
    """Keys of the rows whose replication key is >= `value`, or None when `value` is no value of the key's type.

    A value of the key's type is JSON of the kind the tap emits for it (an integer for int, text
    for text and timestamp) that the server casts to the column's type.
    """
    table = TABLES[chosen.stream]
    kind = table.kind_of(chosen.replication_key)
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return None
    if kind in ("text", "timestamp") and not isinstance(value, str):
        return None
    query = sql.SQL("SELECT {keys} FROM {table} WHERE {column} >= ({value})::{cast}").format(
        keys=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in table.primary_key),
        table=sql.Identifier(SCHEMA, table.name),
        column=sql.Identifier(chosen.replication_key),
        value=sql.Literal(value),
        cast=sql.SQL(CAST[kind]),
    )
    try:
        with conn.cursor() as cur:
            cur.execute(SESSION_SQL)
            cur.execute(query)
            found = cur.fetchall()
    except (psycopg2.Error, ValueError):  # out of range, not a date, a NUL character
        return None
    finally:
        with conn.cursor() as cur:
            cur.execute("RESET TimeZone; RESET DateStyle")
    kinds = [table.kind_of(name) for name in table.primary_key]
    return {tuple(as_record_value(k, text) for k, text in zip(kinds, row, strict=True)) for row in found}


def last_state_problems(last: Any, selected: list[Selected], wal_after: int) -> list[Problem]:
    """The last STATE holds, for each selected stream, an int `version` and, for LOG_BASED, an int `lsn`."""
    if last is None:
        return [Problem("a correct run wrote no STATE", "")]
    bookmarks = last.get("bookmarks") if isinstance(last, dict) else None
    if not isinstance(bookmarks, dict):
        return [Problem("the last STATE has no bookmarks object", json.dumps(last, default=str)[:500])]
    problems = []
    for chosen in selected:
        bookmark = bookmarks.get(chosen.stream)
        if not isinstance(bookmark, dict):
            problems.append(Problem("the last STATE has no bookmark of a synced stream", f"{chosen.stream}: {last!r}"))
            continue
        problems += version_problems(f"last STATE of {chosen.stream}", bookmark.get("version"))
        if chosen.method == "LOG_BASED" and "lsn" in bookmark:
            lsn = bookmark["lsn"]
            if not (isinstance(lsn, int) and not isinstance(lsn, bool) and 0 <= lsn <= wal_after):
                problems.append(
                    Problem(
                        "the last STATE's lsn is no int WAL position the server has written",
                        f"{chosen.stream}: lsn {lsn!r}, WAL end after the run {wal_after} ({lsn_text(wal_after)})",
                    )
                )
    return problems
