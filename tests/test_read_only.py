"""The tap never writes to the database it reads: an audit, by the server, of every session the tap opens.

The contract (hardening issue), for --discover and every replication method:

1. The tap sends no statement that writes. Allowed are SELECT (WITH ... SELECT), COPY (SELECT ...) TO
   STDOUT, SET / SHOW / RESET, transaction control (BEGIN, START TRANSACTION, COMMIT, ROLLBACK,
   SAVEPOINT, RELEASE, ROLLBACK TO) that never asks for READ WRITE, cursors (DECLARE, FETCH, MOVE, CLOSE), the replication commands
   IDENTIFY_SYSTEM, START_REPLICATION and CREATE_REPLICATION_SLOT, and, on the slot the config
   names only, pg_create_logical_replication_slot and pg_replication_slot_advance. Exporting and
   importing a snapshot (pg_export_snapshot, SET TRANSACTION SNAPSHOT) is reading.
2. Every session runs read-only: the server reports `transaction_read_only = on` wherever the tap's
   queries run, so no function they reach could write either.
3. Every transaction is read-only from its first statement: each begins with `BEGIN ... READ ONLY`,
   then the pinned settings as `SET LOCAL`s (so they end with it, and nothing stays on a pooled
   server connection), and no statement runs outside one (no autocommit). A function that turns the
   session's `default_transaction_read_only` off then cannot make a later transaction writable.
   The one exception is pgoutput's publication DDL, in a transaction that asks for READ WRITE
   (`SET TRANSACTION READ WRITE`) before its CREATE, ALTER or COMMENT ON PUBLICATION.

How it is checked. The module starts a cluster of its own that logs every statement, replication
command, connection and disconnection as JSON lines (jsonlog, 15+; CSV lines before, csvlog: each
record has the backend's pid, session id and user). A role with the README's least-privilege grants (LOGIN, REPLICATION, SELECT)
runs the real CLI: --discover; a sync with FULL_TABLE (a table of several `itersize` batches, so a
helper session on the exported snapshot renders every other one), INCREMENTAL and LOG_BASED
(tables and a partitioned table: the slot is created, then the initial copies); inserts, updates
and deletes; a second sync (the changes rendered by two sessions); a third with fast_sync_rds
(moto's S3 and the aws_s3 stand-in of tests/aws_s3_stub.sql), LOG_BASED confirming the slot;
then LOG_BASED with pgoutput in a second database, where the tap's role owns the tables and creates
the publication (the slot is created, the tables copied, the changes rendered); then the catalog
streams (pg_metadata-*, pg_stat_statements preloaded) of both databases, twice.

On every supported version (`make test-versions` runs the module too): a server without wal2json
(the pinned builds) reads the first database's LOG_BASED through pgoutput and a publication of
exactly those tables that the test's superuser made up front (`publication_name`): the tap's role
owns none of them, and the publication DDL is allowed in the second database only, so any DDL the
tap sent in the first one fails clause 1. A server that cannot load plpython3u (the pinned builds'
is linked to a libpython this machine lacks) has no aws_s3 stand-in: the fast_sync_rds run is left
out there, and `test_the_runs_reached_fast_sync_rds` skips saying so. Then, from the log records of the sessions opened by that role (the test's superuser is left aside):

- clause 1: each statement is split and classified (`writing_reason`), with literals, quoted names
  and comments blanked so that a table named "insert" is not a write;
- clause 2 needs the server's word, so user code reached by the tap's own queries reports it:
  `spy.report()` tries to INSERT into spy.writes, catches the read-only error and logs
  (RAISE LOG, into the session's log lines) `transaction_read_only` and whether the write was
  refused. It is called by
  - a row-level security policy on every synced table, once per row a session reads: the main
    session of FULL_TABLE, INCREMENTAL and fast_sync_rds, the LOG_BASED session during the initial
    copies, and every helper session on an exported snapshot;
  - a cast from text to the enum `mood`, which LOG_BASED uses to read each change's value back into
    its column's type: both sessions that render changes.
  Every report must say read-only and refused, spy.writes must stay empty, every session that
  copied rows must have reported, and so must every statement that rendered changes.
- the probe's trap, on every method: a domain whose CHECK reports and then turns the session's
  default_transaction_read_only off (`set_config(..., false)`), reached through the range type
  `span` over it in a column of every LOG_BASED table (reading a change's value back runs the
  CHECK) and, for every method, through the row policy. A session whose later transactions
  relied on the default would report them writable, and its write would be accepted.
- an event trigger on CREATE and ALTER PUBLICATION (made by the superuser, as any event trigger
  is) that reports and turns the default off as well. It runs inside the DDL's read-write
  transaction, which the tap cannot prevent (README, Security): its write is accepted, the one
  that may be; every transaction after it must still be read-only.

Sessions no user code can reach, covered by clauses 1 and 3 only: the --discover session (pg_catalog
queries), the catalog streams' sessions (system catalogs and statistics views), the LOG_BASED session that looks up partitions' parents, the walsender (replication
commands; wal2json runs only built-in output functions), and every session's first transaction,
which only SETs the pinned settings and runs SELECT 1 (connect's check for a statement-mode pooler).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pgcluster
import pytest
from conftest import TAP, Server, records_of, select_all, states_of

from tap_postgres.connection import SESSION_SETTINGS  # noqa

integration = pytest.mark.integration

DBNAME = "shop"
TAP_USER = "tap_reader"
TAP_PASSWORD = "tap-reader-secret"
BUCKET, REGION = "exports", "eu-west-1"
END_OF_RUNS = "read-only audit: the tap runs are over"

# jsonlog (15+; csvlog before) needs the logging collector, hence a restart after ALTER SYSTEM
LOG_SETTINGS = {
    "logging_collector": "on",
    "log_directory": "log",
    "log_filename": "server.log",  # jsonlog writes server.json, csvlog server.csv
    "log_rotation_age": "0",
    "log_rotation_size": "0",
    "log_statement": "all",
    "log_replication_commands": "on",
    "log_connections": "on",
    "log_disconnections": "on",
    "shared_preload_libraries": "pg_stat_statements",  # the catalog streams' statement usage
}

SPY_SQL = """
CREATE SCHEMA spy;
CREATE TABLE spy.writes (pid int, spy text, login name DEFAULT session_user);

-- Tries to write, and logs what the server says about the session's transaction.
CREATE FUNCTION spy.report(spy text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        INSERT INTO spy.writes VALUES (pg_backend_pid(), spy);
        RAISE LOG 'tap-spy: %: transaction_read_only=%, write accepted',
            spy, current_setting('transaction_read_only');
    EXCEPTION WHEN read_only_sql_transaction THEN
        RAISE LOG 'tap-spy: %: transaction_read_only=%, write refused',
            spy, current_setting('transaction_read_only');
    END;
    RETURN true;
END $$;

-- LOG_BASED reads a change's value with (text)::public.mood: this cast replaces the input function.
CREATE TYPE public.mood AS ENUM ('calm', 'busy');
CREATE FUNCTION spy.mood_from_text(value text) RETURNS public.mood
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM spy.report('text-to-enum cast');
    RETURN (SELECT m FROM unnest(enum_range(NULL::public.mood)) AS m WHERE m::text = value);
END $$;
CREATE CAST (text AS public.mood) WITH FUNCTION spy.mood_from_text(text);

-- The probe's trap: a domain whose CHECK turns the session's read-only default off, through a range over it.
CREATE FUNCTION spy.turn_read_only_off(value int) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM spy.report('domain check');
    PERFORM set_config('default_transaction_read_only', 'off', false);
    RETURN true;
END $$;
CREATE DOMAIN public.checked_int AS int CHECK (spy.turn_read_only_off(VALUE));
CREATE TYPE public.span AS RANGE (subtype = public.checked_int);

-- An event trigger on the publication DDL, which the tap cannot keep from running.
CREATE FUNCTION spy.on_publication_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM spy.report('publication DDL event trigger');
    PERFORM set_config('default_transaction_read_only', 'off', false);
END $$;
CREATE EVENT TRIGGER spy_publication_ddl ON ddl_command_start
  WHEN TAG IN ('CREATE PUBLICATION', 'ALTER PUBLICATION') EXECUTE FUNCTION spy.on_publication_ddl();
"""

TABLES_SQL = """
CREATE TABLE big (id int PRIMARY KEY, mood mood NOT NULL, note text);
INSERT INTO big SELECT g, 'calm', 'row ' || g FROM generate_series(1, 95) g;
CREATE TABLE events (id int PRIMARY KEY, mood mood, updated_at timestamptz NOT NULL);
INSERT INTO events SELECT g, 'busy', timestamptz '2024-01-01 00:00+00' + g * interval '1 hour'
  FROM generate_series(1, 25) g;
CREATE TABLE orders (id int PRIMARY KEY, mood mood, note text, span span DEFAULT '[1,5)');
INSERT INTO orders SELECT g, 'calm', 'order ' || g FROM generate_series(1, 25) g;
CREATE TABLE payments (id int PRIMARY KEY, mood mood, amount numeric(10, 2), span span DEFAULT '[2,3)');
INSERT INTO payments SELECT g, 'busy', g * 1.5 FROM generate_series(1, 5) g;
CREATE TABLE readings (id int PRIMARY KEY, mood mood, span span DEFAULT '[3,9)') PARTITION BY RANGE (id);
CREATE TABLE readings_low PARTITION OF readings FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE readings_high PARTITION OF readings FOR VALUES FROM (100) TO (MAXVALUE);
INSERT INTO readings SELECT g, 'calm' FROM generate_series(95, 104) g;
"""
LOG_BASED_TABLES = ("orders", "payments", "readings")

SYNCED_TABLES = ("big", "events", "orders", "payments", "readings")
# the second database, for pgoutput: the tap's role owns its tables, so it may publish them
PGOUTPUT_DBNAME = "shop_pgoutput"
# without wal2json, the first database's LOG_BASED reads through this publication, made up front by the
# test's superuser: the tap's role owns none of its tables, and the tap must use it without any DDL
GIVEN_PUBLICATION = "audit_given"
SLOTS = {f"pipelinewise_{DBNAME}", f"pipelinewise_{PGOUTPUT_DBNAME}"}
EVENT_TRIGGER_REPORT = "publication DDL event trigger: transaction_read_only=off, write accepted"

# the README's least-privilege grants, LOG_BASED included
GRANTS_SQL = f"""
CREATE ROLE {TAP_USER} LOGIN REPLICATION PASSWORD '{TAP_PASSWORD}';
GRANT CONNECT ON DATABASE {DBNAME} TO {TAP_USER};
GRANT USAGE ON SCHEMA public TO {TAP_USER};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {TAP_USER};
"""
AWS_S3_GRANTS_SQL = f"GRANT USAGE ON SCHEMA aws_s3, aws_commons TO {TAP_USER}"
# pgoutput with create_replication_slot: the tap's role owns the published tables and may create publications
PGOUTPUT_GRANTS_SQL = f"""
GRANT CONNECT, CREATE ON DATABASE {PGOUTPUT_DBNAME} TO {TAP_USER};
GRANT USAGE ON SCHEMA public TO {TAP_USER};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {TAP_USER};
"""

CHANGES_SQL = [
    "BEGIN; INSERT INTO orders VALUES (26, 'busy', 'new'); UPDATE orders SET mood = 'busy' WHERE id = 2; "
    "DELETE FROM orders WHERE id = 3; COMMIT",
    "BEGIN; INSERT INTO payments VALUES (6, 'calm', 9); DELETE FROM payments WHERE id = 1; COMMIT",
    "BEGIN; INSERT INTO readings VALUES (105, 'busy'), (5, 'busy'); DELETE FROM readings WHERE id = 96; COMMIT",
    "INSERT INTO events VALUES (26, 'calm', '2024-02-01 00:00+00')",
    "INSERT INTO big VALUES (96, 'busy', 'late')",
]


# ---------------------------------------------------------------------------------------------
# Reading the server log


@dataclass
class Statement:
    """One statement (or replication command) a session sent, with the spy reports logged while it ran."""

    text: str
    reports: list[str] = field(default_factory=list)


@dataclass
class Session:
    """One backend the tap's user opened, as the server log tells it."""

    id: str
    pid: int
    dbname: str = ""
    backend_type: str = ""
    statements: list[Statement] = field(default_factory=list)
    disconnected: bool = False

    @property
    def reports(self) -> list[str]:
        return [report for statement in self.statements for report in statement.reports]

    def ran(self, pattern: str) -> bool:
        return any(re.search(pattern, statement.text, re.I) for statement in self.statements)

    @property
    def renders_changes(self) -> bool:
        return any(renders_changes(statement) for statement in self.statements)

    @property
    def ran_only_the_connect_check(self) -> bool:
        """Tell whether the session ran only connect's first transaction: its settings and SELECT 1."""
        return all(re.match(r"(BEGIN|SET LOCAL|SELECT 1$|ROLLBACK)", st.text) for st in self.statements)

    @property
    def kind(self) -> str:
        """What the session was for, told from what it ran (for the reader of a failure)."""
        return next(label for label, test in SESSION_KINDS if test(self))

    def __str__(self) -> str:
        return f"{self.kind} session (pid {self.pid}, session id {self.id})"


def renders_changes(statement: Statement) -> bool:
    """Tell whether a statement renders LOG_BASED changes (wal2json messages sent back as a JSON array)."""
    return statement.text.startswith("COPY") and "jsonb_array_elements(" in statement.text


@dataclass
class Transaction:
    """The statements a session sent from one BEGIN to its COMMIT or ROLLBACK (or alone, outside any)."""

    begin: str | None  # the BEGIN; None for a statement run outside a transaction
    statements: list[Statement] = field(default_factory=list)

    @property
    def is_publication_ddl(self) -> bool:
        """Tell whether it is pgoutput's publication DDL: READ WRITE asked first, then only publication DDL."""
        pieces = [masked for statement in self.statements[1:] for _, masked in split_statements(statement.text)]
        return (
            bool(pieces)
            and re.fullmatch(r"SET TRANSACTION READ WRITE", pieces[0], re.I) is not None
            and all(PUBLICATION_DDL.match(piece) for piece in pieces[1:-1])
            and re.fullmatch(r"COMMIT|ROLLBACK", pieces[-1], re.I) is not None
        )


PUBLICATION_DDL = re.compile(r"(CREATE|ALTER|COMMENT ON) PUBLICATION\b", re.I)
TRANSACTION_END = re.compile(r"(COMMIT|ROLLBACK(?!\s+TO\b)|END|ABORT)\b", re.I)  # ROLLBACK TO SAVEPOINT goes on


def transactions(session: Session) -> list[Transaction]:
    """Split a session's statements into its transactions, in order."""
    found: list[Transaction] = []
    current: Transaction | None = None
    for statement in session.statements:
        if re.match(r"(BEGIN|START TRANSACTION)\b", statement.text, re.I):
            current = Transaction(statement.text)
            found.append(current)
        elif current is None:
            found.append(Transaction(None, [statement]))
        else:
            current.statements.append(statement)
            if TRANSACTION_END.match(statement.text):
                current = None
    return found


SESSION_KINDS = [
    ("walsender", lambda s: s.backend_type == "walsender"),
    ("helper on an exported snapshot", lambda s: s.ran(r"^SET TRANSACTION SNAPSHOT")),
    # pgoutput's slot session looks up partitions' parents itself
    ("LOG_BASED slot, then first renderer", lambda s: s.ran(r"FROM pg_replication_slots") and s.renders_changes),
    ("LOG_BASED slot and initial copies", lambda s: s.ran(r"FROM pg_replication_slots")),
    ("LOG_BASED partition lookup", lambda s: s.ran(r"pg_partition_ancestors")),
    ("LOG_BASED second renderer", lambda s: s.renders_changes),
    ("fast_sync_rds", lambda s: s.ran(r"aws_s3\.query_export_to_s3")),
    ("--discover", lambda s: s.ran(r"^SELECT current_database\(\)$")),
    ("catalog streams of one database", lambda s: s.ran(r"'pg_read_all_stats'")),
    ("catalog streams' database list", lambda s: s.ran(r"AS listed\(name, position\)")),
    ("FULL_TABLE and INCREMENTAL", lambda s: s.ran(r"^COPY")),
    ("sync's catalog checks (LOG_BASED streams only)", lambda s: s.ran(r"pg_control_system\(\)")),
    # connect's own first transaction (a statement-mode pooler would close the connection there)
    ("nothing run (LOG_BASED second renderer, nothing to render)", lambda s: s.ran_only_the_connect_check),
    ("unknown", lambda s: True),
]


STATEMENT = re.compile(r"(?:statement|execute [^:]*|received replication command): (.*)", re.S)
SPY_REPORT = re.compile(r"tap-spy: (.*)", re.S)


# csvlog's first columns (13 and 14 add more at the end), named as jsonlog names its keys
CSVLOG_KEYS = (
    "timestamp user dbname pid remote_host session_id line_num ps vxid txid session_start error_severity "
    "state_code message detail hint internal_query internal_position context statement cursor_position "
    "func_name application_name backend_type"
).split()


def log_destination(server_version_num: int) -> str:
    """The log format that has the session id and backend type: jsonlog from 15, csvlog before."""
    return "jsonlog" if server_version_num >= 150000 else "csvlog"


def log_records(data_dir: Path) -> list[dict]:
    """Every record of the cluster's JSON (or CSV) log, in order, as jsonlog's keys."""
    records = []
    for path in sorted((data_dir / "log").glob("*.json")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for path in sorted((data_dir / "log").glob("*.csv")):
        with path.open(newline="") as lines:
            rows = list(csv.reader(lines))
        # a row the collector is still writing may be cut short: read it again on the next poll
        complete = [row for row in rows if len(row) >= len(CSVLOG_KEYS)]
        records += [{k: v for k, v in zip(CSVLOG_KEYS, row, strict=False) if v != ""} for row in complete]
    return records


def tap_sessions(records: list[dict]) -> dict[str, Session]:
    """Group the tap user's log records by session: statements in order, each with its spy reports."""
    sessions: dict[str, Session] = {}
    for record in records:
        if record.get("user") != TAP_USER:
            continue
        session = sessions.setdefault(record["session_id"], Session(record["session_id"], record["pid"]))
        session.backend_type = record.get("backend_type", session.backend_type)
        session.dbname = record.get("dbname", session.dbname)
        message = record.get("message", "")
        if match := STATEMENT.match(message):
            session.statements.append(Statement(match.group(1)))
        elif match := SPY_REPORT.match(message):
            if not session.statements:
                session.statements.append(Statement("(before any statement)"))
            session.statements[-1].reports.append(match.group(1))
        elif message.startswith("disconnection:"):
            session.disconnected = True
    return sessions


def read_complete_log(server: Server, timeout: float = 15.0) -> dict[str, Session]:
    """Wait until the log collector has written everything the tap's sessions logged, and parse it.

    The collector writes asynchronously: a statement logged after the tap exited marks the end of
    its statements, and each of its sessions ends with a disconnection line.
    """
    with closing(server.connect(DBNAME)) as conn, conn.cursor() as cur:
        cur.execute("SELECT %s", (END_OF_RUNS,))
    deadline = time.monotonic() + timeout
    while True:
        records = log_records(server.data_dir)
        sessions = tap_sessions(records)
        marked = any(END_OF_RUNS in record.get("message", "") for record in records)
        if marked and all(session.disconnected for session in sessions.values()):
            return sessions
        if time.monotonic() > deadline:
            raise AssertionError(f"the server log did not show the end of the tap's sessions in {timeout} s")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Classifying statements

_QUOTED = re.compile(
    r"""(?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
      | (?P<string>'(?:[^']|'')*')
      | (?P<ident>"(?:[^"]|"")*")
      | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)\$)
      | (?P<comment>--[^\n]*|/\*.*?\*/)""",
    re.S | re.X,
)


def _blank(match: re.Match) -> str:
    text = match.group(0)
    if match.lastgroup == "comment":
        return " " * len(text)
    opening = 2 if match.lastgroup == "estring" else 1
    return text[:opening] + "x" * (len(text) - opening - 1) + text[-1]


def split_statements(text: str) -> list[tuple[str, str]]:
    """Split a message into statements: (raw, masked) pairs, masked having literals, names and comments blanked."""
    masked = _QUOTED.sub(_blank, text)
    pieces, start = [], 0
    for end in [m.start() for m in re.finditer(";", masked)] + [len(masked)]:
        if masked[start:end].strip():
            pieces.append((text[start:end].strip(), masked[start:end].strip()))
        start = end + 1
    return pieces


READING_COMMANDS = {
    "SELECT",
    "WITH",
    "COPY",
    "SET",
    "SHOW",
    "RESET",
    "BEGIN",
    "START",
    "SAVEPOINT",  # the catalog streams' per-stream savepoints
    "RELEASE",
    "COMMIT",
    "END",
    "ROLLBACK",
    "DECLARE",
    "FETCH",
    "MOVE",
    "CLOSE",
    "IDENTIFY_SYSTEM",
    "START_REPLICATION",
    "CREATE_REPLICATION_SLOT",
}
WRITING_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|INTO|TRUNCATE|CREATE|ALTER|DROP|GRANT|REVOKE|COMMENT\s+ON|LOCK|SHARE|"
    r"VACUUM|ANALYZE|CLUSTER|REINDEX|REFRESH|NOTIFY|LISTEN|CALL|IMPORT)\b",
    re.I,
)
WRITING_FUNCTIONS = re.compile(
    r"\b(nextval|setval|pg_(?:try_)?advisory_\w+|lo_\w+|txid_current|pg_current_xact_id|set_config|"
    r"pg_drop_replication_slot|pg_copy_\w+_slot|pg_create_physical_replication_slot|pg_logical_slot_get_\w+|"
    r"pg_logical_emit_message|pg_replication_origin_\w+|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|"
    r"pg_rotate_logfile|pg_switch_wal|pg_create_restore_point|pg_stat_reset\w*|pg_file_\w+|dblink\w*)\s*\(",
    re.I,
)
SLOT_FUNCTIONS = re.compile(
    r"\b(pg_create_logical_replication_slot|pg_replication_slot_advance)\s*\(\s*'([^']*)'", re.I
)
TURNS_READ_ONLY_OFF = re.compile(r"READ\s+WRITE|read_only\s*(?:=|\bTO\b)\s*'?(?:off|false|no|0)\b", re.I)


def writing_reason(raw: str, masked: str) -> str | None:
    """Return why one statement writes (or may turn read-only off), or None when it only reads."""
    command = masked.split(None, 1)[0].upper()
    if command not in READING_COMMANDS:
        return f"{command} is not a reading command"
    if command == "COPY" and not re.fullmatch(r"COPY\s*\(.*\)\s*TO\s+STDOUT\b.*", masked, re.S | re.I):
        return "COPY other than COPY (query) TO STDOUT"
    if word := WRITING_WORDS.search(masked):
        return f"contains {word.group(1).upper()}"
    if function := WRITING_FUNCTIONS.search(masked):
        return f"calls {function.group(1)}()"
    for function, slot in SLOT_FUNCTIONS.findall(raw):
        if slot not in SLOTS:
            return f"calls {function}() on slot {slot!r}, not a configured one"
    if TURNS_READ_ONLY_OFF.search(raw):
        return "asks for READ WRITE"
    return None


def writing_reasons(text: str) -> list[str]:
    """Return why each statement of a message writes; empty when they all only read."""
    return [reason for raw, masked in split_statements(text) if (reason := writing_reason(raw, masked))]


def test_the_classifier_tells_reading_from_writing():
    """The parser the audit relies on: literals and quoted names are not keywords, every statement is seen."""
    reading = [
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        "SET TimeZone = 'UTC';SET DateStyle = 'ISO, MDY';",
        "SET TRANSACTION SNAPSHOT '00000003-00000002-1'",
        """COPY (SELECT '{"type": "RECORD", "stream": "insert"}' || row_to_json(r.*)::text FROM (SELECT "update"."x"
           FROM "public"."delete" AS source) AS r) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')""",
        "SELECT txid_snapshot_xmin(txid_current_snapshot())",
        f"SELECT pg_create_logical_replication_slot('pipelinewise_{DBNAME}', 'wal2json')",
        "WITH RECURSIVE needed(oid) AS (SELECT 1) SELECT * FROM needed -- INSERT in a comment",
        'START_REPLICATION SLOT "x" LOGICAL 0/0 ("add-tables" \'public.drop\')',
        "SELECT d.description AS comment FROM pg_description AS d",  # a column named comment
        "SAVEPOINT metadata_stream; RELEASE SAVEPOINT metadata_stream; ROLLBACK TO SAVEPOINT metadata_stream",
    ]
    writing = {
        "INSERT INTO t VALUES (1)": "INSERT is not a reading command",
        "SELECT 1; DELETE FROM t": "DELETE is not a reading command",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d": "contains DELETE",
        "SELECT * INTO new_table FROM t": "contains INTO",
        "SELECT nextval('s')": "calls nextval()",
        "SELECT pg_advisory_lock(1)": "calls pg_advisory_lock()",
        "COMMENT ON TABLE t IS 'x'": "COMMENT is not a reading command",
        "SELECT 1 FROM t; COMMENT ON TABLE t IS 'x'": "COMMENT is not a reading command",
        "SELECT * FROM t FOR SHARE": "contains SHARE",
        "COPY t FROM STDIN": "COPY other than COPY (query) TO STDOUT",
        "COPY (SELECT 1) TO '/tmp/file'": "COPY other than COPY (query) TO STDOUT",
        "SET default_transaction_read_only = off": "asks for READ WRITE",
        "BEGIN READ WRITE": "asks for READ WRITE",
        "SELECT pg_replication_slot_advance('other', '0/1')": "calls pg_replication_slot_advance() on slot 'other', "
        "not a configured one",
    }
    for text in reading:
        assert writing_reasons(text) == [], text
    for text, reason in writing.items():
        assert writing_reasons(text) == [reason], text


def test_publication_ddl_is_allowed_in_the_second_database_only():
    """Without wal2json the first database's publication is given: DDL there is a write the audit reports."""
    ddl = [
        "BEGIN READ ONLY",
        "SET LOCAL TimeZone = 'UTC'",
        "SET TRANSACTION READ WRITE",
        'ALTER PUBLICATION "audit_given" ADD TABLE "public"."orders"',
        "COMMIT",
    ]
    for dbname, allowed in ((PGOUTPUT_DBNAME, True), (DBNAME, False)):
        session = Session("s", 1, dbname=dbname, statements=[Statement(text) for text in ddl])
        assert [allowed_publication_ddl(session, t) for t in transactions(session)] == [allowed], dbname
        assert (publication_ddl([session]) != []) == allowed, dbname
    assert writing_reasons(ddl[3]) == ["ALTER is not a reading command"]
    assert writing_reasons(ddl[2]) == ["asks for READ WRITE"]


# ---------------------------------------------------------------------------------------------
# The cluster, the database and the runs


@pytest.fixture(scope="module")
def cluster():
    """A cluster of this module's own that logs every statement of every session as JSON lines."""
    data_dir = Path(tempfile.mkdtemp(prefix="tap-postgres-read-only-"))
    try:
        port = pgcluster.start(data_dir)
        server = Server(port=port, data_dir=data_dir)
        with closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version_num")
            cur.execute("ALTER SYSTEM SET log_destination = %s", (log_destination(int(cur.fetchone()[0])),))
            for name, value in LOG_SETTINGS.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
        pgcluster.stop(data_dir)
        pgcluster.start(data_dir, port)
        yield server
    finally:
        pgcluster.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 with a bucket, for fast_sync_rds."""
    import boto3

    port = pgcluster.free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        pgcluster.wait_until_ready(port)
        boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield endpoint
    finally:
        moto.terminate()
        moto.wait(timeout=10)


def spied_tables(conn, *, owned: bool = False) -> None:
    """Create the spies, the trap and the tables, each table spied on (and trapped) by a row policy."""
    with conn.cursor() as cur:
        cur.execute(SPY_SQL)
        cur.execute(TABLES_SQL)
        for table in SYNCED_TABLES:
            cur.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            if owned:
                cur.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")  # the owner too
            cur.execute(
                f"CREATE POLICY spy ON {table} FOR SELECT "
                "USING (spy.report('row policy') AND id::public.checked_int IS NOT NULL)"
            )


@dataclass
class Setup:
    """The audited server and what it can run."""

    server: Server
    wal2json: bool  # else the first database's LOG_BASED reads through pgoutput and GIVEN_PUBLICATION
    aws_s3: bool  # the aws_s3 stand-in loaded (it needs plpython3u): fast_sync_rds is audited
    s3_endpoint: str = ""


def loads_plpython(conn) -> bool:
    """Tell whether the server can load plpython3u (the pinned builds' is linked to a missing libpython)."""
    with conn.cursor() as cur:
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
            return True
        except Exception:  # noqa: BLE001 - any failure to load it means the same here
            conn.rollback()
            return False


@pytest.fixture(scope="module")
def database(cluster, request) -> Setup:
    """The synced tables, spied on; the aws_s3 stand-in where it loads; the tap's role; pgoutput's database,
    its tables owned by the tap's role; pg_stat_statements in both, for the catalog streams."""
    with closing(cluster.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {DBNAME}")
        cur.execute(f"CREATE DATABASE {PGOUTPUT_DBNAME}")
    setup = Setup(cluster, wal2json=cluster.has_wal2json, aws_s3=False)
    with closing(cluster.connect(DBNAME)) as conn, conn.cursor() as cur:
        spied_tables(conn)
        cur.execute("CREATE EXTENSION pg_stat_statements")
        cur.execute(GRANTS_SQL)
        if not setup.wal2json:  # made before the tap's first run creates the slot, as the README asks
            cur.execute(
                f"CREATE PUBLICATION {GIVEN_PUBLICATION} FOR TABLE {', '.join(LOG_BASED_TABLES)}"
                " WITH (publish_via_partition_root = false)"
            )
        if loads_plpython(conn):
            setup.aws_s3 = True
            setup.s3_endpoint = request.getfixturevalue("s3_endpoint")
            cur.execute((Path(__file__).parent / "aws_s3_stub.sql").read_text())
            cur.execute(f"ALTER DATABASE {DBNAME} SET aws_s3_stub.endpoint_url = %s", (setup.s3_endpoint,))
            cur.execute(AWS_S3_GRANTS_SQL)
    with closing(cluster.connect(PGOUTPUT_DBNAME)) as conn, conn.cursor() as cur:
        spied_tables(conn, owned=True)
        cur.execute("CREATE EXTENSION pg_stat_statements")
        cur.execute(PGOUTPUT_GRANTS_SQL)
        for table in (*LOG_BASED_TABLES, "readings_low", "readings_high"):
            cur.execute(f"ALTER TABLE {table} OWNER TO {TAP_USER}")
    return setup


class Runs:
    """The real CLI, as the tap's role, with its outputs kept for the sanity checks."""

    def __init__(self, setup: Setup, tmp_dir: Path):
        self.setup = setup
        self.server = setup.server
        self.tmp_dir = tmp_dir
        # the first database's LOG_BASED settings: wal2json, else pgoutput through the given publication
        self.first_database = (
            {} if setup.wal2json else {"output_plugin": "pgoutput", "publication_name": GIVEN_PUBLICATION}
        )
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": setup.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        self.outputs: dict[str, list[dict]] = {}

    def config(self, **extra) -> dict:
        return {
            "host": self.server.host,
            "port": self.server.port,
            "user": TAP_USER,
            "password": TAP_PASSWORD,
            "dbname": DBNAME,
            "itersize": 10,  # big's 95 rows take ten batches: the helper session renders every other one
            "create_replication_slot": True,
            **extra,
        }

    def tap(self, name: str, *args: str, config: dict) -> str:
        config_path = self.tmp_dir / f"{name}-config.json"
        config_path.write_text(json.dumps(config))
        result = subprocess.run(
            [*TAP, "--config", str(config_path), *args], capture_output=True, timeout=60, env=self.env
        )
        assert result.returncode == 0, f"{name}: tap exited {result.returncode}:\n{result.stderr.decode()}"
        return result.stdout.decode()

    def discover(self) -> dict:
        return json.loads(self.tap("discover", "--discover", config=self.config()))

    def sync(self, name: str, catalog: dict, state: dict | None = None, **extra) -> list[dict]:
        args = ["--catalog", str(self._write(f"{name}-catalog.json", catalog))]
        if state is not None:
            args += ["--state", str(self._write(f"{name}-state.json", state))]
        messages = [json.loads(line) for line in self.tap(name, *args, config=self.config(**extra)).splitlines()]
        self.outputs[name] = messages
        return messages

    def _write(self, name: str, content: dict) -> Path:
        path = self.tmp_dir / name
        path.write_text(json.dumps(content))
        return path


@pytest.fixture(scope="module")
def runs(database, tmp_path_factory) -> Runs:
    """Discovery, then every replication method, fast_sync_rds where it loads, pgoutput creating its
    publication, and the catalog streams, all as the tap's role."""
    runs = Runs(database, tmp_path_factory.mktemp("read_only"))
    server, first_database = database.server, runs.first_database
    catalog = select_all(runs.discover(), "FULL_TABLE", only={"public-big"})
    catalog = select_all(catalog, "INCREMENTAL", "updated_at", only={"public-events"})
    catalog = select_all(catalog, "LOG_BASED", only={"public-orders", "public-payments", "public-readings"})

    first = runs.sync("first", catalog, **first_database)  # creates the slot, copies the LOG_BASED tables
    with closing(server.connect(DBNAME)) as conn, conn.cursor() as cur:
        for statement in CHANGES_SQL:
            cur.execute(statement)
    second = runs.sync("second", catalog, state=states_of(first)[-1], **first_database)  # renders the changes

    if database.aws_s3:  # FULL_TABLE and INCREMENTAL exported to S3; LOG_BASED as before, confirming the slot
        runs.sync(
            "fast_sync_rds",
            catalog,
            state=states_of(second)[-1],
            fast_sync_rds=True,
            fast_sync_rds_s3_bucket=BUCKET,
            fast_sync_rds_s3_region=REGION,
            fast_sync_rds_s3_prefix="audit",
            **first_database,
        )

    # pgoutput: the tap creates the publication (the event trigger fires), the slot, then copies and renders
    pgoutput = {"dbname": PGOUTPUT_DBNAME, "output_plugin": "pgoutput"}
    only = {f"public-{table}" for table in LOG_BASED_TABLES}
    pg_catalog = select_all(
        json.loads(runs.tap("discover-pgoutput", "--discover", config=runs.config(**pgoutput))), "LOG_BASED", only=only
    )
    pg_first = runs.sync("pgoutput-first", pg_catalog, **pgoutput)
    with closing(server.connect(PGOUTPUT_DBNAME)) as conn, conn.cursor() as cur:
        for statement in CHANGES_SQL[:3]:
            cur.execute(statement)
    runs.sync("pgoutput-second", pg_catalog, state=states_of(pg_first)[-1], **pgoutput)

    # the catalog streams of both databases, twice: statement usage is then read as deltas of the first
    metadata = {"metadata_only": True, "metadata_databases": f"{DBNAME},{PGOUTPUT_DBNAME}"}
    md_catalog = select_all(json.loads(runs.tap("discover-metadata", "--discover", config=runs.config(**metadata))))
    md_first = runs.sync("metadata-first", md_catalog, **metadata)
    runs.sync("metadata-second", md_catalog, state=states_of(md_first)[-1], **metadata)
    return runs


@pytest.fixture(scope="module")
def sessions(runs) -> list[Session]:
    """The tap's sessions, from the complete server log."""
    return list(read_complete_log(runs.server).values())


@pytest.fixture(scope="module")
def spy_writes(runs) -> list[tuple]:
    """The rows the spies managed to write, by database: none but the event trigger's, in the publication DDL."""
    writes = []
    for dbname in (DBNAME, PGOUTPUT_DBNAME):
        with closing(runs.server.connect(dbname)) as conn, conn.cursor() as cur:
            # the test's own superuser sessions write too (the trap's domain CHECK runs on their inserts)
            cur.execute("SELECT %s, spy FROM spy.writes WHERE login = %s ORDER BY pid", (dbname, TAP_USER))
            writes += cur.fetchall()
    return writes


# ---------------------------------------------------------------------------------------------
# The audit


def statement_line(statement: Statement) -> str:
    return " ".join(statement.text.split())[:160]


def allowed_publication_ddl(session: Session, transaction: Transaction) -> bool:
    """Tell whether a transaction is the publication DDL the tap may run: in the database whose tables its
    role owns. The first database's publication is the superuser's: there the tap must do no DDL at all."""
    return session.dbname == PGOUTPUT_DBNAME and transaction.is_publication_ddl


def publication_ddl(sessions: list[Session]) -> list[Statement]:
    """The statements of pgoutput's publication DDL transactions, the one place writing is allowed."""
    return [
        statement
        for session in sessions
        for transaction in transactions(session)
        if allowed_publication_ddl(session, transaction)
        for statement in transaction.statements
    ]


@integration
def test_the_runs_reached_every_kind_of_session(runs, sessions):
    """Not the contract: the proof that the runs reached every kind of session the contract is about."""
    second = runs.outputs["second"]
    assert len(records_of(runs.outputs["first"], "public-big")) == 95
    assert {r["id"] for r in records_of(second, "public-orders")} == {2, 3, 26}
    assert {r["id"] for r in records_of(second, "public-payments")} == {1, 6}
    assert {r["id"] for r in records_of(second, "public-readings")} == {5, 96, 105}
    assert [r["id"] for r in records_of(second, "public-events")] == [25, 26]
    assert {r["span"] for r in records_of(second, "public-orders") if r["id"] == 26} == {"[1,5)"}
    pgoutput = runs.outputs["pgoutput-second"]
    assert {r["id"] for r in records_of(pgoutput, "public-orders")} == {2, 3, 26}
    assert {r["id"] for r in records_of(pgoutput, "public-readings")} == {5, 96, 105}

    kinds = {session.kind for session in sessions}
    assert "unknown" not in kinds
    assert kinds >= {
        "--discover",
        "FULL_TABLE and INCREMENTAL",
        "helper on an exported snapshot",
        "LOG_BASED slot and initial copies",
        "LOG_BASED slot, then first renderer",
        "LOG_BASED second renderer",
        "LOG_BASED partition lookup",
        "walsender",
        "catalog streams' database list",
        "catalog streams of one database",
    }
    # first, second (and fast_sync_rds) in the first database, twice in pgoutput's
    assert sum(session.ran(r"^START_REPLICATION") for session in sessions) == 4 + runs.setup.aws_s3
    assert sum(session.ran(r"pg_create_logical_replication_slot\(") for session in sessions) == 2
    if runs.setup.aws_s3:  # the fast_sync_rds run confirms the slot through the function
        assert sum(session.ran(r"pg_replication_slot_advance\(") for session in sessions) >= 1
    # the traps went off: in the copies and renders of both databases, and in the publication DDL
    for dbname in (DBNAME, PGOUTPUT_DBNAME):
        renders = [s for s in sessions if s.dbname == dbname and s.renders_changes]
        assert any("domain check" in report for session in renders for report in session.reports), dbname
    assert any(EVENT_TRIGGER_REPORT in statement.reports for statement in publication_ddl(sessions))
    # the catalog streams read both databases, statement usage included
    for name in ("metadata-first", "metadata-second"):
        usage = records_of(runs.outputs[name], "pg_metadata-statement_usage")
        assert {r["database"] for r in usage} == {DBNAME, PGOUTPUT_DBNAME}, name
        columns = records_of(runs.outputs[name], "pg_metadata-columns")
        assert {r["database"] for r in columns if r["table_name"] == "orders"} == {DBNAME, PGOUTPUT_DBNAME}, name


@integration
def test_the_runs_reached_fast_sync_rds(runs, sessions):
    """Not the contract: the proof that the fast_sync_rds run was audited, where the aws_s3 stand-in loads."""
    if not runs.setup.aws_s3:
        pytest.skip("the aws_s3 stand-in needs plpython3u, which this server cannot load: fast_sync_rds not audited")
    assert [m["type"] for m in runs.outputs["fast_sync_rds"]].count("FAST_SYNC_RDS_S3_INFO") == 2
    assert any(session.kind == "fast_sync_rds" for session in sessions)


@integration
def test_the_first_database_read_its_given_publication(runs, sessions):
    """Not the contract: without wal2json, the first database's changes came through the superuser's publication."""
    if runs.setup.wal2json:
        pytest.skip("the first database reads through wal2json on this server")
    assert {r["id"] for r in records_of(runs.outputs["second"], "public-orders")} == {2, 3, 26}
    first_database = [session for session in sessions if session.dbname == DBNAME]
    assert any(session.ran(GIVEN_PUBLICATION) for session in first_database if session.backend_type == "walsender")


@integration
def test_no_statement_writes(sessions):
    """Clause 1: every statement of every session of the tap's role only reads (the publication DDL aside)."""
    ddl = [id(statement) for statement in publication_ddl(sessions)]
    writes = [
        f"{session}: {', '.join(reasons)}:\n    {statement_line(statement)}"
        for session in sessions
        for statement in session.statements
        if id(statement) not in ddl and (reasons := writing_reasons(statement.text))
    ]
    assert not writes, "the tap sent statements that write:\n" + "\n".join(writes)


@integration
def test_every_session_runs_read_only(sessions, spy_writes):
    """Clause 2: wherever the tap's queries ran user code, the server says the transaction is read-only."""
    ddl = [id(statement) for statement in publication_ddl(sessions)]
    not_read_only = [
        f"{session}: {statement.reports.count(report)} x {report!r}\n    during {statement_line(statement)}"
        for session in sessions
        for statement in session.statements
        for report in sorted(set(statement.reports))
        if not report.endswith(": transaction_read_only=on, write refused")
        and not (report == EVENT_TRIGGER_REPORT and id(statement) in ddl)
    ]
    assert not not_read_only, "sessions of the tap that are not read-only:\n" + "\n".join(not_read_only)
    # the event trigger runs inside the DDL's read-write transaction: its write is the one that may be
    assert {write for write in spy_writes} == {(PGOUTPUT_DBNAME, "publication DDL event trigger")}, (
        "the spies' writes went through"
    )


@integration
def test_every_transaction_is_read_only_from_its_first_statement(sessions):
    """Clause 3: BEGIN ... READ ONLY, then the pinned settings as SET LOCAL, and no statement outside a transaction."""
    problems = []
    for session in sessions:
        if session.backend_type == "walsender":
            continue  # replication commands run in no transaction; the walsender is read-only by startup option
        for transaction in transactions(session):
            first = transaction.statements[0].text if transaction.statements else ""
            if transaction.begin is None:
                problems.append(f"{session}: ran outside a transaction: {statement_line(transaction.statements[0])}")
            elif not re.fullmatch(r"BEGIN\b.*\bREAD ONLY", transaction.begin, re.I):
                problems.append(f"{session}: a transaction not read-only from its start: {transaction.begin}")
            elif not all(f"SET LOCAL {name} = " in first for name in SESSION_SETTINGS):
                problems.append(f"{session}: a transaction that does not start with the pinned SET LOCALs: {first}")
            elif re.search(r"\bREAD\s+WRITE\b", " ".join(s.text for s in transaction.statements), re.I) and not (
                allowed_publication_ddl(session, transaction)
            ):
                problems.append(f"{session}: READ WRITE asked outside the publication DDL: {transaction.statements}")
    assert not problems, "transactions of the tap that were not read-only from the start:\n" + "\n".join(problems)


@integration
def test_the_spies_saw_every_session_that_read_rows(sessions):
    """Clause 2 is only as good as its reach: each session that copied rows, and each rendering of changes, reported."""
    unseen = [
        str(session)
        for session in sessions
        if session.ran(r"^COPY|aws_s3\.query_export_to_s3")
        and not session.reports
        and session.kind != "catalog streams of one database"  # system catalogs: no policy, no user code
    ]
    assert not unseen, "sessions that read rows but no spy reported from:\n" + "\n".join(unseen)
    unseen_renders = [
        f"{session}: {statement_line(statement)}"
        for session in sessions
        for statement in session.statements
        if renders_changes(statement) and not statement.reports
    ]
    assert not unseen_renders, "renderings of changes no spy reported from:\n" + "\n".join(unseen_renders)
