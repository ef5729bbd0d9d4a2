"""Server CPU per million values of each type family in FULL_TABLE's render query: where the server's time goes.

Starts a private cluster (the bench's settings; TAP_PG_VERSION=N picks a pinned build, PG_BIN a
directory), makes one table per family of --rows rows of one column, and measures, for each, the
CPU seconds of the backend running the statement (its /proc utime + stime, median of --repeat):

- plain: `COPY (SELECT c FROM t) TO STDOUT`, what psql's \\copy costs the server;
- tap: the COPY that FULL_TABLE runs for that one column (rows.RecordQueries, as the sync builds it);
- empty: the same COPY with no column: the scan, row_to_json of an empty row and the envelope.

`render` = tap - empty is what the family's values cost on top of a row, per million values. The
`wide` row is the bench's wide table (11 families, 12 columns) read whole. The client discards what
it reads, so only the server's side is measured. Prints a Markdown table (for bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import pgcluster  # noqa: E402
from run_bench import WIDE_SQL  # noqa: E402

from tap_postgres import discovery  # noqa: E402
from tap_postgres.catalog import SelectedStream  # noqa: E402
from tap_postgres.connection import SESSION_SETTINGS, startup_options  # noqa: E402
from tap_postgres.output import record_envelope  # noqa: E402
from tap_postgres.sync.rows import RecordQueries  # noqa: E402

WORK = ROOT / "bench" / ".work"

# family: (column type, SQL of the value from g = 1..rows)
FAMILIES = {
    "smallint": ("smallint", "(g % 30000)::smallint"),
    "integer": ("integer", "g % 1000"),
    "bigint": ("bigint", "g * 1000003::bigint"),
    "numeric(12,2)": ("numeric(12,2)", "(g % 100000) / 100.0"),
    "numeric": ("numeric", "g / 7.0"),
    "real": ("real", "g / 7.0"),
    "double precision": ("double precision", "g / 7.0"),
    "boolean": ("boolean", "g % 2 = 0"),
    "text": ("text", "'note number ' || g"),
    "text, quoted": ("text", "'a \"quoted\" note\\' || g"),
    "varchar(32)": ("varchar(32)", "'code-' || (g % 997)"),
    "char(12)": ("char(12)", "'c' || (g % 997)"),
    "uuid": ("uuid", "md5(g::text)::uuid"),
    "timestamp": ("timestamp", "timestamp '2020-01-01' + g * interval '1 second'"),
    "timestamptz": ("timestamptz", "timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'"),
    "date": ("date", "date '2020-01-01' + g % 1000"),
    "time": ("time", "time '00:00' + g * interval '1 second'"),
    "interval": ("interval", "g * interval '1 second'"),
    "jsonb": ("jsonb", "jsonb_build_object('k', g, 's', 'v' || g % 10)"),
    "json": ("json", "json_build_object('k', g, 's', 'v' || g % 10)"),
    "bytea": ("bytea", "decode(md5(g::text), 'hex')"),
    "inet": ("inet", "('10.0.' || (g % 250) || '.' || (g % 200))::inet"),
    "integer[]": ("integer[]", "ARRAY[g, g + 1, g + 2]"),
    "text[]": ("text[]", "ARRAY['a' || g, 'b']"),
    "numeric[]": ("numeric[]", "ARRAY[g / 100.0, 1.5]"),
    "timestamptz[]": ("timestamptz[]", "ARRAY[timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second']"),
}


def table_name(family: str) -> str:
    """Return the table holding one family's column."""
    return "f_" + "".join(c if c.isalnum() else "_" for c in family)


def create_tables(conn, rows: int) -> None:
    """Create one table per family, and the bench's wide table."""
    with conn.cursor() as cur:
        for family, (column_type, value) in FAMILIES.items():
            cur.execute(
                f"CREATE TABLE {table_name(family)} AS SELECT ({value})::{column_type} AS c "
                f"FROM generate_series(1, {rows}) g"
            )
        cur.execute(
            WIDE_SQL.replace("__ROWS__", str(rows)).replace("CREATE TABLE wide_nokey AS SELECT * FROM wide;", "")
        )
    conn.commit()
    conn.autocommit = True
    conn.cursor().execute("VACUUM ANALYZE")
    conn.autocommit = False


class BackendCpu:
    """The CPU seconds a session's backend has used, from /proc."""

    def __init__(self, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            self.pid = cur.fetchone()[0]
        conn.rollback()
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        """Return utime + stime of the backend."""
        text = Path(f"/proc/{self.pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


def copy_cpu(conn, cpu: BackendCpu, query, repeat: int) -> float:
    """Return the median server CPU seconds of a COPY TO STDOUT whose output is thrown away."""
    spent = []
    with conn.cursor() as cur, open(os.devnull, "wb") as sink:
        for _ in range(repeat):
            before = cpu.seconds()
            cur.copy_expert(query, sink)
            spent.append(cpu.seconds() - before)
            conn.rollback()
    return statistics.median(spent)


def tap_query(table: discovery.Table, with_columns: bool):
    """Return the COPY FULL_TABLE runs for `table` (or for none of its columns), with a RECORD envelope."""
    stream = SelectedStream(
        tap_stream_id=table.tap_stream_id,
        schema_name=table.schema_name,
        table_name=table.name,
        is_view=False,
        replication_method="FULL_TABLE",
        replication_key=None,
        key_properties=[],
        columns=[c.name for c in table.columns],
        schema={},
        metadata={},
    )
    envelope = record_envelope(table.tap_stream_id, 1796320028893, "2026-12-03T17:47:08.893741Z")
    return RecordQueries(stream, table.columns if with_columns else [], envelope).matching()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated families (default: all)")
    args = parser.parse_args()
    families = args.only.split(",") if args.only else list(FAMILIES)

    data_dir = WORK / "render-cost-pgdata"
    shutil.rmtree(data_dir, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    port = pgcluster.start(data_dir)
    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=port,
            user=pgcluster.SUPERUSER,
            password=pgcluster.PASSWORD,
            dbname="postgres",
            options=startup_options(SESSION_SETTINGS),
        )
        create_tables(conn, args.rows)
        tables = {t.name: t for t in discovery.describe_tables(conn)}
        cpu = BackendCpu(conn)
        per_million = 1_000_000 / args.rows
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            version = cur.fetchone()[0].split(" on ")[0]
        conn.rollback()
        print(f"{version}, {args.rows} rows, median of {args.repeat}, load average {os.getloadavg()[0]:.1f}\n")
        print("| family | plain COPY | tap COPY | render (tap - empty row) |")
        print("| --- | ---: | ---: | ---: |")
        for family in [*families, "wide"]:
            table = tables["wide" if family == "wide" else table_name(family)]
            plain = copy_cpu(conn, cpu, f"COPY (SELECT * FROM {table.name}) TO STDOUT", args.repeat)
            tap = copy_cpu(conn, cpu, tap_query(table, True), args.repeat)
            empty = copy_cpu(conn, cpu, tap_query(table, False), args.repeat)
            print(
                f"| {family} | {plain * per_million:.2f} | {tap * per_million:.2f} | {(tap - empty) * per_million:.2f} |",
                flush=True,
            )
        conn.close()
    finally:
        pgcluster.stop(data_dir)


if __name__ == "__main__":
    main()
