"""`make bench`: every sync method against the wire limit (psql \\copy) and, with --peers, pipelinewise-tap-postgres.

Starts a private cluster, generates deterministic tables with generate_series, runs each case several
times and reports the median wall time, rows/s, output MB/s, peak RSS and ratios measured in the same
run, as a Markdown table printed and written to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # noqa: E402

WORK = ROOT / "bench" / ".work"
PEER_PACKAGE = "pipelinewise-tap-postgres"
PEER_PYTHON_CANDIDATES = [Path.home() / ".pyenv/versions" / v / "bin/python" for v in ("3.9.18", "3.8.18")]

WIDE_SQL = """
CREATE TABLE wide (
    id bigint PRIMARY KEY, quantity integer, amount numeric(12, 2), note text, code varchar(32),
    flag boolean, created timestamp, created_tz timestamptz, day date, doc jsonb, uid uuid,
    updated_at timestamptz NOT NULL
);
INSERT INTO wide
SELECT g, g % 1000, (g % 100000) / 100.0, 'note number ' || g, 'code-' || (g % 997), g % 2 = 0,
       timestamp '2020-01-01' + g * interval '1 second', timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second',
       date '2020-01-01' + g % 1000, jsonb_build_object('k', g, 's', 'v' || g % 10), md5(g::text)::uuid,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'
  FROM generate_series(1, __ROWS__) g;
CREATE INDEX ON wide (updated_at);
"""
NARROW_SQL = """
CREATE TABLE narrow (id bigint PRIMARY KEY, n integer, ts timestamptz NOT NULL);
INSERT INTO narrow SELECT g, g % 7919, timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'
  FROM generate_series(1, __ROWS__) g;
CREATE INDEX ON narrow (ts);
"""
CHANGES_SQL = """
CREATE TABLE changes (id bigint PRIMARY KEY, n integer, note text, amount numeric(12, 2), updated timestamptz);
INSERT INTO changes SELECT g, g, 'row ' || g, g / 100.0, now() FROM generate_series(1, __HALF__) g;
"""
# The backlog: every row updated, then as many inserted, in transactions of 1000 changes.
BACKLOG_SQL = """
DO $$
BEGIN
  FOR b IN 0..(__HALF__ / 1000 - 1) LOOP
    UPDATE changes SET n = n + 1, updated = now() WHERE id > b * 1000 AND id <= (b + 1) * 1000;
    COMMIT;
  END LOOP;
  FOR b IN 0..(__HALF__ / 1000 - 1) LOOP
    INSERT INTO changes SELECT g, g, 'new ' || g, g / 100.0, now()
      FROM generate_series(__HALF__ + b * 1000 + 1, __HALF__ + (b + 1) * 1000) g;
    COMMIT;
  END LOOP;
END $$;
"""
# One DO block per 500 tables: each runs in its own transaction, within max_locks_per_transaction.
MANY_TABLES_BLOCK = """
DO $$
BEGIN
  FOR t IN __FIRST__..__LAST__ LOOP
    EXECUTE format('CREATE TABLE t%s (id bigint PRIMARY KEY, a int, b text, c numeric(10,2), d timestamptz,
                    e boolean, f jsonb, g date, h varchar(20), i uuid)', t);
  END LOOP;
END $$;
"""


def many_tables_sql(count: int) -> str:
    """Return SQL creating tables t1..t<count> of ten columns each."""
    return "".join(
        MANY_TABLES_BLOCK.replace("__FIRST__", str(first)).replace("__LAST__", str(min(first + 499, count)))
        for first in range(1, count + 1, 500)
    )


@dataclass
class Run:
    """One measured process: wall seconds, stdout bytes and lines, peak RSS in MB."""

    seconds: float
    out_bytes: int
    out_lines: int
    rss_mb: float


def measure(command: list[str], env: dict | None = None) -> Run:
    """Run a command, read its stdout as a target would, and return what it cost."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out_bytes = out_lines = 0
    while chunk := process.stdout.read(1 << 20):
        out_bytes += len(chunk)
        out_lines += chunk.count(b"\n")
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return Run(seconds, out_bytes, out_lines, usage.ru_maxrss / 1024)


def median_run(command: list[str], repeat: int, env: dict | None = None) -> Run:
    """Return the run with the median wall time of `repeat` runs (the peak RSS is the largest seen)."""
    runs = sorted((measure(command, env) for _ in range(repeat)), key=lambda run: run.seconds)
    middle = runs[len(runs) // 2]
    return Run(middle.seconds, middle.out_bytes, middle.out_lines, max(run.rss_mb for run in runs))


def psql_command(port: int, dbname: str, *args: str) -> list[str]:
    """Return a psql command line reaching `dbname` on the bench cluster."""
    return ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", dbname, *args]


def psql(port: int, dbname: str, sql: str) -> None:
    """Run SQL with psql, stopping at the first error."""
    subprocess.run(
        psql_command(port, dbname, "-q", "-v", "ON_ERROR_STOP=1"),
        input=sql.encode(),
        check=True,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, PGPASSWORD=pgcluster.PASSWORD),
    )


def select(catalog: dict, stream_id: str, method: str, key: str | None = None) -> dict:
    """Return a copy of the catalog with only `stream_id` selected."""
    catalog = json.loads(json.dumps(catalog))
    catalog["streams"] = [s for s in catalog["streams"] if s["tap_stream_id"] == stream_id]
    table_md = next(m["metadata"] for m in catalog["streams"][0]["metadata"] if m["breadcrumb"] == [])
    table_md.update({"selected": True, "replication-method": method})
    if key:
        table_md["replication-key"] = key
    return catalog


def install_peer() -> Path | None:
    """Install pipelinewise-tap-postgres into its own Python < 3.10 virtualenv; None if impossible."""
    venv = WORK / "peer-venv"
    executable = venv / "bin" / "tap-postgres"
    if executable.exists():
        return executable
    python = next((p for p in PEER_PYTHON_CANDIDATES if p.exists()), None) or shutil.which("python3.9")
    if python is None:
        print(f"skipping peers: {PEER_PACKAGE} needs Python < 3.10 and none was found", file=sys.stderr)
        return None
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", PEER_PACKAGE], check=True)
    return executable


def version_of(executable: Path, package: str) -> str:
    pip = executable.parent / "pip"
    shown = subprocess.run([str(pip), "show", package], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in shown.splitlines() if line.startswith("Version")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", action="store_true", help="also run pipelinewise-tap-postgres")
    parser.add_argument("--wide-rows", type=int, default=int(os.environ.get("BENCH_WIDE_ROWS", 1_000_000)))
    parser.add_argument("--narrow-rows", type=int, default=int(os.environ.get("BENCH_NARROW_ROWS", 2_000_000)))
    parser.add_argument("--changes", type=int, default=int(os.environ.get("BENCH_CHANGES", 200_000)))
    parser.add_argument("--tables", type=int, default=int(os.environ.get("BENCH_TABLES", 5000)))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 3)))
    args = parser.parse_args()

    shutil.rmtree(WORK / "pgdata", ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    peer = install_peer() if args.peers else None
    port = pgcluster.start(WORK / "pgdata")
    try:
        results = run_cases(port, args, peer)
    finally:
        pgcluster.stop(WORK / "pgdata")
    report(results, args, peer)


def run_cases(port: int, args, peer: Path | None) -> list[dict]:
    print(f"generating {args.wide_rows} wide rows, {args.narrow_rows} narrow rows, {args.tables} tables...", flush=True)
    psql(port, "postgres", "CREATE DATABASE bench; CREATE DATABASE discovery")
    psql(
        port,
        "bench",
        WIDE_SQL.replace("__ROWS__", str(args.wide_rows))
        + NARROW_SQL.replace("__ROWS__", str(args.narrow_rows))
        + CHANGES_SQL.replace("__HALF__", str(args.changes // 2))
        + "VACUUM ANALYZE;",
    )
    psql(port, "discovery", many_tables_sql(args.tables))

    config = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": pgcluster.PASSWORD, "dbname": "bench"}
    (WORK / "config.json").write_text(json.dumps(config))
    (WORK / "config-discovery.json").write_text(json.dumps(dict(config, dbname="discovery")))
    ours = [str(Path(sys.executable).parent / "tap-postgres")]
    catalog = json.loads(
        subprocess.run([*ours, "-c", str(WORK / "config.json"), "-d"], capture_output=True, check=True).stdout
    )
    peer_catalog = None
    if peer:
        peer_catalog = json.loads(
            subprocess.run([str(peer), "-c", str(WORK / "config.json"), "-d"], capture_output=True, check=True).stdout
        )

    results = []
    for table, rows in (("wide", args.wide_rows), ("narrow", args.narrow_rows)):
        print(f"measuring {table}...", flush=True)
        baseline = median_run(
            psql_command(port, "bench", "-c", f"\\copy (select * from {table}) to /dev/null"),
            args.repeat,
            env=dict(os.environ, PGPASSWORD=pgcluster.PASSWORD),
        )
        results.append(dict(case=f"psql \\copy {table} (baseline)", rows=rows, run=baseline, baseline=baseline))
        key = "updated_at" if table == "wide" else "ts"
        for method in ("FULL_TABLE", "INCREMENTAL"):
            stream_catalog = WORK / f"catalog-{table}-{method}.json"
            stream_catalog.write_text(json.dumps(select(catalog, f"public-{table}", method, key)))
            run = median_run([*ours, "-c", str(WORK / "config.json"), "--catalog", str(stream_catalog)], args.repeat)
            result = dict(case=f"{method} {table}", rows=rows, run=run, baseline=baseline)
            if peer:
                peer_path = WORK / f"peer-catalog-{table}-{method}.json"
                peer_path.write_text(json.dumps(select(peer_catalog, f"public-{table}", method, key)))
                print(f"  pipelinewise {method} {table} (one run)...", flush=True)
                result["peer"] = measure([str(peer), "-c", str(WORK / "config.json"), "--catalog", str(peer_path)])
            results.append(result)

    results.append(measure_log_based(port, args, ours, catalog, peer, peer_catalog))

    print("measuring discovery...", flush=True)
    run = median_run([*ours, "-c", str(WORK / "config-discovery.json"), "--discover"], args.repeat)
    result = dict(case=f"discovery of {args.tables} tables", rows=None, run=run, baseline=None)
    if peer:
        result["peer"] = measure([str(peer), "-c", str(WORK / "config-discovery.json"), "--discover"])
    results.append(result)
    return results


def measure_log_based(port: int, args, ours: list[str], catalog: dict, peer: Path | None, peer_catalog) -> dict:
    """Each tap reads the same backlog through a slot of its own, from a state saved before it was written.

    Both confirm their slot only up to the LSN of the state they start from, so every run reads the
    whole backlog again.
    """
    print(f"writing a backlog of {args.changes} changes...", flush=True)
    taps = {"ours": (ours, catalog)} | ({"peer": ([str(peer)], peer_catalog)} if peer else {})
    psql(
        port,
        "bench",
        "".join(
            f"SELECT pg_create_logical_replication_slot('pipelinewise_bench_{name}', 'wal2json');" for name in taps
        ),
    )
    lsn = int(
        subprocess.run(
            psql_command(port, "bench", "-At", "-c", "SELECT (pg_current_wal_lsn() - '0/0')::bigint"),
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PGPASSWORD=pgcluster.PASSWORD),
        ).stdout
    )
    psql(port, "bench", BACKLOG_SQL.replace("__HALF__", str(args.changes // 2)))
    state = {"bookmarks": {"public-changes": {"last_replication_method": "LOG_BASED", "lsn": lsn, "version": 1}}}
    (WORK / "state-log-based.json").write_text(json.dumps(dict(state, currently_syncing=None)))
    commands = {}
    for name, (command, tap_catalog) in taps.items():
        # pipelinewise stops at its end LSN only when a later message arrives; on an idle database it
        # waits logical_poll_total_seconds for one, so that wait is cut short (it is in its wall time)
        config = json.loads((WORK / "config.json").read_text()) | {"tap_id": name, "logical_poll_total_seconds": 2}
        (WORK / f"config-{name}.json").write_text(json.dumps(config))
        (WORK / f"catalog-{name}-log-based.json").write_text(
            json.dumps(select(tap_catalog, "public-changes", "LOG_BASED"))
        )
        commands[name] = [
            *command,
            "-c",
            str(WORK / f"config-{name}.json"),
            "--catalog",
            str(WORK / f"catalog-{name}-log-based.json"),
            "--state",
            str(WORK / "state-log-based.json"),
        ]
    print("measuring LOG_BASED...", flush=True)
    run = median_run(commands["ours"], args.repeat)
    result = dict(case=f"LOG_BASED {args.changes}-change backlog", rows=args.changes, run=run, baseline=None)
    if peer:
        print("  pipelinewise LOG_BASED (one run)...", flush=True)
        result["peer"] = measure(commands["peer"])
    return result


def report(results: list[dict], args, peer: Path | None) -> None:
    header = "| case | rows | wall s | rows/s | MB/s out | peak RSS MB | time / psql | pipelinewise wall s | rows/s ours / theirs |"
    lines = [header, "|" + " --- |" * 9]
    for result in results:
        run, rows, baseline, theirs = result["run"], result["rows"], result["baseline"], result.get("peer")
        rate = f"{rows / run.seconds:,.0f}" if rows else ""
        mb_s = f"{run.out_bytes / run.seconds / 1e6:.1f}" if run.out_bytes else ""
        vs_psql = f"{run.seconds / baseline.seconds:.2f}x" if baseline and baseline is not run else ""
        peer_cells = ["", ""]
        if theirs:
            peer_cells = [f"{theirs.seconds:.1f}", f"{theirs.seconds / run.seconds:.1f}x"]
        lines.append(
            f"| {result['case']} | {rows or ''} | {run.seconds:.2f} | {rate} | {mb_s} | {run.rss_mb:.0f} | {vs_psql} | "
            + " | ".join(peer_cells)
            + " |"
        )
    table = "\n".join(lines)

    pg_version = subprocess.run(
        [str(pgcluster.bin_dir() / "postgres"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    ours_version = version_of(Path(sys.executable).parent / "tap-postgres", "tap-postgres")
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    context = [
        f"Run on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `make bench{' PEERS=1' if peer else ''}`.",
        f"Machine: {os.cpu_count()} cores, {memory_gb:.0f} GiB, {platform.platform()}; {pg_version}; "
        f"Python {platform.python_version()}; tap-postgres {ours_version}"
        + (f"; {PEER_PACKAGE} {version_of(peer, PEER_PACKAGE)} (Python < 3.10 venv, one run per case)" if peer else "")
        + ".",
        f"Ours and psql: median of {args.repeat} runs. Output is read from a pipe as a target would. "
        "`time / psql` is our wall time over `psql \\copy (select * from t) to /dev/null` measured in the same run; "
        "`rows/s ours / theirs` is pipelinewise's wall time over ours.",
        "INCREMENTAL runs start with no bookmark, so they emit every row in key order.",
        "LOG_BASED reads a backlog of committed changes (half updates, half inserts, 1000 per transaction) "
        "through wal2json from a saved `lsn`, each tap with a slot of its own; it has no psql baseline. "
        "pipelinewise's time includes up to 2 s (logical_poll_total_seconds) waiting for a message past its "
        "end LSN before it stops; ours stops when a keepalive shows it reached that LSN.",
    ]
    text = "# Benchmark results\n\n" + "\n".join(context) + "\n\n" + table + "\n"
    print("\n" + table)
    (ROOT / "bench" / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
