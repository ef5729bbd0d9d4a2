"""`make bench`: every sync method against the wire limit (psql \\copy) and, with --peers, pipelinewise-tap-postgres.

Starts a private cluster, generates deterministic tables with generate_series, runs each case several
times and reports the median wall time, rows/s, output MB/s, peak RSS, the server's CPU seconds
spent serving the run, and ratios measured in the same run, as Markdown tables printed and written
to bench/RESULTS.md. LOG_BASED reads one backlog through wal2json and through pgoutput.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import orjson  # noqa: E402
import pgcluster  # noqa: E402
import psycopg2  # noqa: E402

from tap_postgres.server_versions import pgoutput_protocol  # noqa: E402

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
CREATE TABLE wide_nokey AS SELECT * FROM wide;
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


class ServerCpu:
    """The CPU seconds the bench cluster's processes spend on one command (Linux /proc; None elsewhere).

    The total is exact: a backend's utime and stime are added to the postmaster's cutime and cstime
    when the postmaster reaps it, so the change of those two over a window in which only the
    command's backends exit is the CPU of every backend that served it (walsenders, sessions and
    any parallel workers), to the clock tick, however short-lived. Nobody else connects during a
    measurement and autovacuum is off, so no other backend is born in the window (one that is is
    reported). A backend from before may still exit in it (the psql session that just wrote a
    backlog: psql returns before its backend is gone) and add its whole life's CPU: each one's CPU
    is sampled too, and the last sample of those that exit is taken off. The walsenders' share is
    sampled from /proc/<pid>/stat every POLL seconds while they live: they are idle at the end of a
    run, when the tap renders its last batches, so their last sample is their total.
    """

    POLL = 0.05

    def __init__(self, data_dir: Path):
        self.pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _fields(pid: int) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2 :].split()  # the fields after "pid (comm)", from field 3 (state)

    def _reaped(self) -> float:
        fields = self._fields(self.pid)
        return (int(fields[13]) + int(fields[14])) / self.tick  # cutime, cstime

    def _own(self, pid: int) -> float | None:
        fields = self._fields(pid)
        return None if fields is None else (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def children(self) -> set[int]:
        try:
            return {int(pid) for pid in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()}
        except OSError:  # a kernel without CONFIG_PROC_CHILDREN: look for them
            found = set()
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and (fields := self._fields(int(entry.name))) and fields[1] == str(self.pid):
                    found.add(int(entry.name))
            return found

    @staticmethod
    def title(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""

    def start(self) -> None:
        self.titles: dict[int, str] = {}
        self.walsenders: dict[int, float] = {}
        # The CPU so far of each process from before, last sampled: what it adds if it exits now. A
        # backend reaped between the list of children and the first reading of cutime would be in
        # both, and so taken off once too often (a 1M-row writer's seconds made rendering negative):
        # the two are read again until the reaped total did not move around the list.
        while True:
            self.reaped_before = self._reaped()
            self.before = self.children()
            self.earlier: dict[int, float] = {}
            self._look()
            if self._reaped() == self.reaped_before:
                break
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self._look()
            time.sleep(self.POLL)

    def _look(self) -> set[int]:
        children = self.children()
        for pid in self.before & children:
            if (cpu := self._own(pid)) is not None:
                self.earlier[pid] = cpu
        born = children - self.before
        for pid in born:
            if not self.titles.get(pid, "").startswith("postgres: "):  # a new child shows the postmaster's at first
                self.titles[pid] = self.title(pid)
            if self.titles[pid].startswith("postgres: walsender") and (cpu := self._own(pid)) is not None:
                self.walsenders[pid] = cpu
        return born

    def stop(self) -> tuple[float, float]:
        """Wait until the command's backends are gone; return the server CPU seconds and the walsenders' part."""
        self.running = False
        self.thread.join()
        deadline = time.monotonic() + 10
        while self._look() and time.monotonic() < deadline:
            time.sleep(0.01)
        if left := self._look():
            print(f"  warning: backends still running after the command: {sorted(left)}", file=sys.stderr)
        ours = ("postgres: walsender", "postgres: postgres", "postgres: parallel worker")
        foreign = [t for t in self.titles.values() if t.startswith("postgres: ") and not t.startswith(ours)]
        if foreign:
            print(f"  warning: other server processes ran during the measurement: {foreign}", file=sys.stderr)
        exited = sum(cpu for pid, cpu in self.earlier.items() if pid not in self.children())
        return self._reaped() - self.reaped_before - exited, sum(self.walsenders.values())


SERVER_CPU: ServerCpu | None = None  # set once the cluster runs, when /proc shows it


@dataclass
class Run:
    """One measured process: wall seconds, stdout bytes and lines, peak RSS in MB, CPU seconds of its own and of the server."""

    seconds: float
    out_bytes: int
    out_lines: int
    rss_mb: float
    cpu_s: float = 0.0
    server_cpu_s: float | None = None
    walsender_cpu_s: float | None = None
    runs: list[Run] = field(default_factory=list)  # a median's runs


# GNU time, which reports the peak RSS of the command alone: Linux gives a child made by a large
# process (this one, once it has read the 5000-table catalogs) that process's peak RSS as its own
# ru_maxrss floor (exec keeps the high-water mark of the memory it replaces), so every case read 914 MB
GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def measure(command: list[str], env: dict | None = None) -> Run:
    """Run a command, read its stdout as a target would, and return what it cost, to it and to the server."""
    peak_file = WORK / "peak-rss-kb"
    if GNU_TIME:
        command = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *command]
    if SERVER_CPU:
        SERVER_CPU.start()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out_bytes = out_lines = 0
    while chunk := process.stdout.read(1 << 20):
        out_bytes += len(chunk)
        out_lines += chunk.count(b"\n")
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    server_cpu = walsender_cpu = None
    if SERVER_CPU:
        server_cpu, walsender_cpu = SERVER_CPU.stop()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime  # GNU time's own is a few milliseconds
    peak_kb = int(peak_file.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return Run(seconds, out_bytes, out_lines, peak_kb / 1024, cpu, server_cpu, walsender_cpu)


def median_of(runs: list[Run]) -> Run:
    """Return the median run's wall time and output, the median of each CPU figure, and the largest peak RSS."""
    middle = sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]

    def median(values: list[float | None]) -> float | None:
        return None if None in values else statistics.median(values)

    return Run(
        middle.seconds,
        middle.out_bytes,
        middle.out_lines,
        max(run.rss_mb for run in runs),
        statistics.median(run.cpu_s for run in runs),
        median([run.server_cpu_s for run in runs]),
        median([run.walsender_cpu_s for run in runs]),
        runs,
    )


def median_run(command: list[str], repeat: int, env: dict | None = None) -> Run:
    """Return the median of `repeat` runs (see median_of)."""
    return median_of([measure(command, env) for _ in range(repeat)])


def median_runs(commands: dict, repeat: int) -> dict[str, Run]:
    """Run each command `repeat` times, taking turns (in the reverse order every other turn) so that a
    slower spell of a shared machine, or going first, favours none of them.

    A command is a list, or a function of the turn's number returning one (a run that needs a slot of its own).
    """
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for turn in range(repeat):
        for name in list(commands)[:: -1 if turn % 2 else 1]:
            command = commands[name]
            runs[name].append(measure(command(turn) if callable(command) else command))
    return {name: median_of(each) for name, each in runs.items()}


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
    parser.add_argument(
        "--log-based-repeat",
        type=int,
        default=int(os.environ.get("BENCH_LOG_BASED_REPEAT", 9)),
        help="runs of each LOG_BASED plugin, taking turns: the plugins' comparison is the point of that case",
    )
    parser.add_argument(
        "--huge-repeat",
        type=int,
        default=int(os.environ.get("BENCH_HUGE_REPEAT", 5)),
        help="runs of each reader on the one-transaction backlog (of --changes changes), taking turns",
    )
    parser.add_argument(
        "--huge-changes",
        type=int,
        default=int(os.environ.get("BENCH_HUGE_CHANGES", 1_000_000)),
        help="changes in the LOG_BASED memory case's one transaction",
    )
    parser.add_argument(
        "--many-table-changes",
        type=int,
        default=int(os.environ.get("BENCH_MANY_TABLE_CHANGES", 4000)),
        help=f"changes of each of the {MANY_TABLES} tables in the LOG_BASED memory case's other transaction",
    )
    parser.add_argument(
        "--family-changes",
        type=int,
        default=int(os.environ.get("BENCH_FAMILY_CHANGES", 100_000)),
        help="inserts in each type family's one-transaction backlog of the LOG_BASED per-family case (0: skip it)",
    )
    parser.add_argument(
        "--latency-rates",
        type=lambda text: [int(rate) for rate in text.split(",")],
        default=[int(r) for r in os.environ.get("BENCH_LATENCY_RATES", "2000,5000,10000,40000").split(",")],
        help="changes/s the sustained-load writer commits, comma-separated, one run per rate and plugin",
    )
    parser.add_argument(
        "--latency-seconds",
        type=int,
        default=int(os.environ.get("BENCH_LATENCY_SECONDS", 15)),
        help="how long the writer commits at each rate",
    )
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(CASE_GROUPS),
        help=f"run only these groups of cases, comma-separated ({', '.join(CASE_GROUPS)}); a partial run "
        "writes its tables to bench/.work/RESULTS-partial.md, leaving bench/RESULTS.md as it was",
    )
    args = parser.parse_args()
    if not args.only <= set(CASE_GROUPS):
        parser.error(f"--only takes {', '.join(CASE_GROUPS)}")

    started = time.monotonic()
    args.load = os.getloadavg()[0]  # what else the machine was doing
    shutil.rmtree(WORK / "pgdata", ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    peer = install_peer() if args.peers else None
    port = pgcluster.start(WORK / "pgdata")
    global SERVER_CPU
    if Path("/proc/self/stat").exists():
        SERVER_CPU = ServerCpu(WORK / "pgdata")
    try:
        results = run_cases(port, args, peer)
    finally:
        pgcluster.stop(WORK / "pgdata")
    report(results, args, peer, time.monotonic() - started)


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
    psql(port, "discovery", many_tables_sql(args.tables) + "VACUUM ANALYZE;")
    # no autovacuum worker may exit during a measurement: its CPU would count as the run's (ServerCpu)
    psql(port, "postgres", "ALTER SYSTEM SET autovacuum = off; SELECT pg_reload_conf();")

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
    for table, rows in (("wide", args.wide_rows), ("narrow", args.narrow_rows)) if "tables" in args.only else ():
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

    if "scaling" in args.only:
        results.extend(measure_scaling(port, args, ours, catalog))
    if "batch" in args.only:
        results.extend(measure_batch(port, args, ours, catalog))
    if "log_based" in args.only:
        results.extend(measure_log_based(port, args, ours, catalog, peer, peer_catalog))
    if "discovery" not in args.only:
        return results
    print("measuring discovery...", flush=True)
    run = median_run([*ours, "-c", str(WORK / "config-discovery.json"), "--discover"], args.repeat)
    result = dict(case=f"discovery of {args.tables} tables", rows=None, run=run, baseline=None)
    if peer:
        result["peer"] = measure([str(peer), "-c", str(WORK / "config-discovery.json"), "--discover"])
    results.append(result)
    return results


CASE_GROUPS = ("tables", "scaling", "batch", "log_based", "discovery")
PLUGINS = ("wal2json", "pgoutput")
RECVLOGICAL = "pg_recvlogical"
RECVLOGICAL_SLOT = "bench_recvlogical_"
SESSIONS = (1, 2, 4)


def measure_scaling(port: int, args, ours: list[str], catalog: dict) -> list[dict]:
    """FULL_TABLE by block ranges on 1, 2 and 4 sessions, the wide table and a copy of it without a key, and a resume.

    Each case takes turns with `psql \\copy` of the same table (median_runs), so its ratio is to a
    baseline measured next to it. The resume case is a copy killed (SIGKILL) once half the rows are
    out, then rerun from the last STATE read: its time is the rerun's, its re-sent share the rows
    both runs sent.
    """
    results = []
    env_config = json.loads((WORK / "config.json").read_text())
    for table in ("wide", "wide_nokey"):
        print(f"measuring FULL_TABLE scaling on {table}...", flush=True)
        stream_catalog = WORK / f"catalog-scale-{table}.json"
        stream_catalog.write_text(json.dumps(select(catalog, f"public-{table}", "FULL_TABLE")))
        commands = {"psql": psql_command(port, "bench", "-c", f"\\copy (select * from {table}) to /dev/null")}
        for sessions in SESSIONS:
            config = WORK / f"config-sessions-{sessions}.json"
            config.write_text(json.dumps(dict(env_config, full_table_sessions=sessions)))
            commands[sessions] = [*ours, "-c", str(config), "--catalog", str(stream_catalog)]
        os.environ["PGPASSWORD"] = pgcluster.PASSWORD  # psql's, in median_runs
        runs = median_runs(commands, args.repeat)
        baseline = runs.pop("psql")
        results.append(
            dict(
                case=f"psql \\copy {table} (scaling baseline)",
                rows=args.wide_rows,
                run=baseline,
                baseline=baseline,
                scale=True,
                sessions=None,
            )
        )
        for sessions, run in runs.items():
            results.append(
                dict(
                    case=f"FULL_TABLE {table}, {sessions} session{'s' if sessions > 1 else ''}",
                    rows=args.wide_rows,
                    run=run,
                    baseline=baseline,
                    wall_ratio=turn_ratio(run, baseline, "seconds"),
                    scale=True,
                    sessions=sessions,
                )
            )
        if table == "wide_nokey":
            results.append(measure_resume(args, commands[2], baseline, table))
    return results


def measure_batch(port: int, args, ours: list[str], catalog: dict) -> list[dict]:
    """FULL_TABLE of the wide table as RECORD lines, into gzip BATCH files and into plain ones, in turns with psql.

    Each batch run starts from an empty directory (removed by the run's own shell), so the files of
    earlier runs neither fill the disk nor slow the next one.
    """
    print("measuring BATCH files on wide...", flush=True)
    stream_catalog = WORK / "catalog-batch-wide.json"
    stream_catalog.write_text(json.dumps(select(catalog, "public-wide", "FULL_TABLE")))
    env_config = json.loads((WORK / "config.json").read_text())
    commands = {
        "psql": psql_command(port, "bench", "-c", "\\copy (select * from wide) to /dev/null"),
        "RECORD lines": [*ours, "-c", str(WORK / "config.json"), "--catalog", str(stream_catalog)],
    }
    for compression in ("gzip", "none"):
        directory = WORK / f"batches-{compression}"
        config = WORK / f"config-batch-{compression}.json"
        batch = {"encoding": {"format": "jsonl", "compression": compression}, "storage": {"root": directory.as_uri()}}
        config.write_text(json.dumps(dict(env_config, batch_config=batch)))
        tap = " ".join(shlex.quote(part) for part in [*ours, "-c", str(config), "--catalog", str(stream_catalog)])
        commands[f"BATCH {compression}"] = ["sh", "-c", f"rm -rf {shlex.quote(str(directory))} && exec {tap}"]
    os.environ["PGPASSWORD"] = pgcluster.PASSWORD  # psql's, in median_runs
    runs = median_runs(commands, args.repeat)
    baseline = runs.pop("psql")
    results = [dict(case="psql \\copy wide (BATCH baseline)", rows=args.wide_rows, run=baseline, baseline=baseline)]
    for name, run in runs.items():
        case = "FULL_TABLE wide, " + (name if name == "RECORD lines" else f"into {name} files")
        results.append(
            dict(
                case=case,
                rows=args.wide_rows,
                run=run,
                baseline=baseline,
                wall_ratio=turn_ratio(run, baseline, "seconds"),
            )
        )
    for result in results:
        result.update(scale=True, sessions=None)
    return results


def measure_resume(args, command: list[str], baseline: Run, table: str) -> dict:
    """Kill a 2-session copy at 50% of its rows, then measure the rerun from its last STATE (median of `repeat`)."""
    print(f"measuring kill at 50% and resume on {table}...", flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first, state = set(), None
    for line in process.stdout:
        if line.startswith(b'{"type":"RECORD"'):
            first.add(line[line.index(b'"record":') : line.index(b',"version"')])
            if len(first) >= args.wide_rows // 2:
                break
        elif line.startswith(b'{"type":"STATE"'):
            state = json.loads(line)["value"]
    process.kill()
    process.wait()
    state_path = WORK / "state-resume.json"
    state_path.write_text(json.dumps(state))
    resumed = [*command, "--state", str(state_path)]
    check = subprocess.run(resumed, capture_output=True, check=True).stdout.splitlines()
    second = {
        line[line.index(b'"record":') : line.index(b',"version"')]
        for line in check
        if line.startswith(b'{"type":"RECORD"')
    }
    assert len(first | second) == args.wide_rows, "the resume lost rows"
    run = median_run(resumed, args.repeat)
    return dict(
        case=f"FULL_TABLE {table}, 2 sessions, rerun after kill -9 at 50%",
        rows=len(second),
        run=run,
        baseline=baseline,
        scale=True,
        sessions=2,
        resent=len(first & second) / args.wide_rows,
    )


def turn_ratio(run: Run, baseline: Run, figure: str) -> float | None:
    """Return the median over the turns of median_runs of `figure`'s ratio to the baseline's in the same turn.

    A turn's runs follow each other, so on a shared machine this is steadier than the ratio of the medians.
    """
    pairs = [(getattr(r, figure), getattr(b, figure)) for r, b in zip(run.runs, baseline.runs, strict=True)]
    if not pairs or any(value is None or not base for value, base in pairs):
        return None
    return statistics.median(value / base for value, base in pairs)


class BenchSession:
    """One session on the bench database for the LOG_BASED cases' slots, publications and WAL positions.

    It lives through every measurement: a backend that exits inside one would count as the run's
    server CPU (ServerCpu), which psql's short-lived sessions could do.
    """

    def __init__(self, port: int):
        self.conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", password=pgcluster.PASSWORD, dbname="bench"
        )
        self.conn.autocommit = True

    def execute(self, statement: str, params: tuple = ()) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def lsn(self) -> int:
        """Return the server's WAL position as an integer, as a STATE's `lsn` holds it."""
        return self.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint")[0][0]

    def lsn_text(self) -> str:
        return self.execute("SELECT pg_current_wal_lsn()::text")[0][0]

    def drop_slots(self) -> None:
        """Drop every slot of the bench (none is in use between cases): each case starts with its own."""
        self.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")

    def create_slot(self, name: str, plugin: str) -> None:
        self.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (name, plugin))

    def fresh_copy(self, source: str, name: str) -> None:
        """Make `name` a copy of the slot `source`, which nothing reads: it reads what `source` would, from the start."""
        self.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (name,)
        )
        self.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (source, name))

    def slot(self, name: str) -> tuple[bool, int] | None:
        """Return whether a slot is in use and how far it is confirmed; None when there is no such slot."""
        rows = self.execute(
            "SELECT active, (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
            (name,),
        )
        return rows[0] if rows else None

    def inserts_left(self, slot: str, plugin: str, publication: str) -> int:
        """Return how many inserts a free slot would still send: those after the position it is confirmed to."""
        if plugin == "wal2json":
            query = (
                "SELECT count(*) FROM pg_logical_slot_peek_changes(%s, NULL, NULL, 'format-version', '2')"
                " WHERE data::json->>'action' = 'I'"
            )
            return self.execute(query, (slot,))[0][0]
        query = (
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s) WHERE get_byte(data, 0) = ascii('I')"
        )
        return self.execute(query, (slot, publication))[0][0]

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class LogBench:
    """What every LOG_BASED case needs: the cluster, the tap's command, its configuration and the bench session."""

    port: int
    args: argparse.Namespace
    ours: list[str]
    session: BenchSession

    def config(self, tap_id: str, plugin: str, **settings) -> Path:
        """Write the tap's config for a slot pipelinewise_bench_<tap_id> through `plugin`; return its path."""
        config = json.loads((WORK / "config.json").read_text())
        # it stops at the end LSN; the walsender may decode a large transaction for seconds before its first message
        config |= {"tap_id": tap_id, "output_plugin": plugin, "logical_poll_total_seconds": 300, **settings}
        path = WORK / f"config-{tap_id}.json"
        path.write_text(json.dumps(config))
        return path

    def tap_command(self, tap_id: str, config: Path, catalog: dict, streams: list[str], lsn: int) -> list[str]:
        """Return the tap's command reading `streams` LOG_BASED from a state whose bookmarks are at `lsn`."""
        bookmark = {"last_replication_method": "LOG_BASED", "lsn": lsn, "version": 1}
        state = {"bookmarks": {stream: dict(bookmark) for stream in streams}, "currently_syncing": None}
        (WORK / f"state-{tap_id}.json").write_text(json.dumps(state))
        (WORK / f"catalog-{tap_id}.json").write_text(json.dumps(select_many(catalog, streams, "LOG_BASED")))
        return [
            *self.ours,
            *("-c", str(config), "--catalog", str(WORK / f"catalog-{tap_id}.json")),
            *("--state", str(WORK / f"state-{tap_id}.json")),
        ]

    def recvlogical(self, plugin: str, slot: str, end_lsn: str) -> list[str]:
        """pg_recvlogical reading `slot` to /dev/null with the tap's plugin options: the walsender's own limit."""
        if plugin == "pgoutput":
            protocol = pgoutput_protocol(self.session.conn.server_version)
            options = {"proto_version": protocol, "publication_names": "pipelinewise_bench_pgoutput"}
        else:
            options = dict(WAL2JSON_OPTIONS, **{"add-tables": "public.changes"})
        return [
            str(pgcluster.bin_dir() / "pg_recvlogical"),
            *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "bench"),
            *("-S", slot, "--start", "--no-loop", "-f", "/dev/null", "-E", end_lsn),
            *(part for name, value in options.items() for part in ("-o", f"{name}={value}")),
        ]


# The tap's wal2json options (LogicalPass._plugin_options), which pg_recvlogical is given too.
WAL2JSON_OPTIONS = {
    "format-version": "2",
    "include-xids": "true",
    "include-timestamp": "true",
    "include-lsn": "true",
    "include-types": "false",
    "actions": "insert,update,delete,truncate",
}
# Many small transactions (1000 changes each) and one transaction of the same changes.
LOG_SHAPES = {"small": "transactions of 1000 changes", "huge": "one transaction"}
# One transaction: the first half of the rows updated, as many new ones inserted.
HUGE_BACKLOG_SQL = """
BEGIN;
UPDATE changes SET n = n + 1, updated = now() WHERE id <= __HALF__;
INSERT INTO changes SELECT m + g, g, 'new ' || g, g / 100.0, now()
  FROM (SELECT max(id) AS m FROM changes) AS top, generate_series(1, __HALF__) g;
COMMIT;
"""
INSERTS_SQL = """
INSERT INTO changes SELECT m + g, g, 'new ' || g, g / 100.0, now()
  FROM (SELECT max(id) AS m FROM changes) AS top, generate_series(1, __ROWS__) g;
"""
MANY_TABLES = 100
# The memory case's tables, like discovery's (ten columns), and one transaction of changes to all of them.
MEMORY_TABLES_SQL = """
DO $$
BEGIN
  FOR t IN 1..__TABLES__ LOOP
    EXECUTE format('CREATE TABLE m%s (id bigint PRIMARY KEY, a int, b text, c numeric(10,2), d timestamptz,
                    e boolean, f jsonb, g date, h varchar(20), i uuid)', t);
  END LOOP;
END $$;
CREATE TABLE ticks (id bigint PRIMARY KEY, committed_us bigint NOT NULL, note text);
"""
MEMORY_CHANGES_SQL = """
DO $$
BEGIN
  FOR t IN 1..__TABLES__ LOOP
    EXECUTE format('INSERT INTO m%s SELECT m + g, g, ''row '' || g, g / 100.0, now(), g %% 2 = 0,
                    jsonb_build_object(''k'', g), date ''2020-01-01'' + g %% 1000, ''h'' || g, md5(g::text)::uuid
                    FROM (SELECT coalesce(max(id), 0) AS m FROM m%s) AS top, generate_series(1, __ROWS__) g', t, t);
  END LOOP;
END $$;
"""
# The per-family case: a table of three columns of one type family, and its values from g.
FAMILIES = {
    "integer": "g",
    "numeric(12,2)": "g / 100.0",
    "text": "'row ' || g",
    "timestamp with time zone": "timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'",
    "date": "date '2020-01-01' + g % 3000",
    "boolean": "g % 2 = 0",
    "uuid": "md5(g::text)::uuid",
    "double precision": "g / 7.0",
    "interval": "g * interval '1 minute'",
    "jsonb": "jsonb_build_object('k', g, 's', 'v' || g)",
    "integer[]": "ARRAY[g, g + 1, g + 2]",
    "bytea": "decode(md5(g::text), 'hex')",
}


def family_tables_sql() -> str:
    return "".join(
        f"CREATE TABLE fam{n} (id bigint PRIMARY KEY, a {family}, b {family}, c {family});"
        for n, family in enumerate(FAMILIES)
    )


def family_backlog_sql(n: int, family: str, changes: int) -> str:
    value = FAMILIES[family]
    return f"INSERT INTO fam{n} SELECT g, {value}, {value}, {value} FROM generate_series(1, {changes}) g;"


# The sustained-load writer: transactions of TICK_ROWS rows on a schedule, each row stamped with the
# server's clock just before its COMMIT (clock_timestamp(), in microseconds since the epoch).
TICK_ROWS = 100
TICKS_SQL = """
DO $$
DECLARE
  started timestamptz := clock_timestamp();
BEGIN
  FOR t IN 0..(__TRANSACTIONS__ - 1) LOOP
    PERFORM pg_sleep(greatest(0, extract(epoch FROM started + t * interval '__INTERVAL__ seconds' - clock_timestamp())));
    INSERT INTO ticks SELECT t * __ROWS__ + g, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint, 'tick'
      FROM generate_series(1, __ROWS__) g;
    COMMIT;
  END LOOP;
END $$;
"""


def select_many(catalog: dict, stream_ids: list[str], method: str) -> dict:
    """Return a copy of the catalog with only `stream_ids` selected, by `method`."""
    catalog = json.loads(json.dumps(catalog))
    wanted = set(stream_ids)
    catalog["streams"] = [s for s in catalog["streams"] if s["tap_stream_id"] in wanted]
    for stream in catalog["streams"]:
        table_md = next(m["metadata"] for m in stream["metadata"] if m["breadcrumb"] == [])
        table_md.update({"selected": True, "replication-method": method})
    return catalog


def measure_log_based(port: int, args, ours: list[str], catalog: dict, peer: Path | None, peer_catalog) -> list[dict]:
    """LOG_BASED through both plugins in both shapes against pg_recvlogical, its memory, and its latency under load.

    Each case starts from slots made for it, before its backlog is written, and a state saved then.
    """
    args.log_load = os.getloadavg()[0]
    session = BenchSession(port)
    # the publications first: decoding reads them as of each change
    psql(
        port,
        "bench",
        MEMORY_TABLES_SQL.replace("__TABLES__", str(MANY_TABLES)) + family_tables_sql() + "VACUUM ANALYZE;",
    )
    many = ", ".join(f"public.m{t}" for t in range(1, MANY_TABLES + 1))
    session.execute(
        "CREATE PUBLICATION pipelinewise_bench_pgoutput FOR TABLE public.changes;"
        f"CREATE PUBLICATION pipelinewise_bench_many_pgoutput FOR TABLE {many};"
        "CREATE PUBLICATION pipelinewise_bench_ticks_pgoutput FOR TABLE public.ticks;"
        + "".join(
            f"CREATE PUBLICATION pipelinewise_bench_fam{n}_pgoutput FOR TABLE public.fam{n};"
            for n in range(len(FAMILIES))
        )
    )
    catalog = json.loads(
        subprocess.run([*ours, "-c", str(WORK / "config.json"), "-d"], capture_output=True, check=True).stdout
    )
    bench = LogBench(port, args, ours, session)
    os.environ["PGPASSWORD"] = pgcluster.PASSWORD  # pg_recvlogical's
    try:
        results = []
        for shape in LOG_SHAPES:
            results.extend(measure_log_shape(bench, catalog, shape, peer if shape == "small" else None, peer_catalog))
        results.extend(measure_log_memory(bench, catalog))
        results.extend(measure_log_families(bench, catalog))
        results.extend(measure_latency(bench, catalog))
    finally:
        session.close()
    return results


def measure_log_shape(bench: LogBench, catalog: dict, shape: str, peer: Path | None, peer_catalog) -> list[dict]:
    """Both plugins and pg_recvlogical through each read one backlog of `shape`, in turns, each run through a fresh slot.

    pg_recvlogical confirms its slot as it reads, so each of its runs reads a new copy of a slot
    made before the backlog; our tap confirms only up to its state's `lsn`, which is before it.
    """
    args, session = bench.args, bench.session
    print(f"writing a {args.changes}-change backlog in {LOG_SHAPES[shape]}...", flush=True)
    session.drop_slots()
    for plugin in PLUGINS:
        session.create_slot(f"pipelinewise_bench_{plugin}", plugin)
        session.create_slot(f"{RECVLOGICAL_SLOT}{plugin}", plugin)
    if peer:
        session.create_slot("pipelinewise_bench_peer", "wal2json")
    lsn = session.lsn()
    backlog = BACKLOG_SQL if shape == "small" else HUGE_BACKLOG_SQL
    psql(bench.port, "bench", backlog.replace("__HALF__", str(args.changes // 2)) + "CHECKPOINT;")
    end_lsn = session.lsn_text()
    commands: dict = {
        plugin: bench.tap_command(plugin, bench.config(plugin, plugin), catalog, ["public-changes"], lsn)
        for plugin in PLUGINS
    }

    def recvlogical(plugin: str):
        def command(turn: int) -> list[str]:
            session.fresh_copy(f"{RECVLOGICAL_SLOT}{plugin}", f"{RECVLOGICAL_SLOT}{plugin}_run")
            return bench.recvlogical(plugin, f"{RECVLOGICAL_SLOT}{plugin}_run", end_lsn)

        return command

    for plugin in PLUGINS:
        commands[f"{RECVLOGICAL} {plugin}"] = recvlogical(plugin)
    print(
        f"measuring LOG_BASED ({LOG_SHAPES[shape]}) through {' and '.join(PLUGINS)}, and pg_recvlogical...", flush=True
    )
    repeat = args.log_based_repeat if shape == "small" else args.huge_repeat
    runs = median_runs(commands, repeat)
    baseline = runs[PLUGINS[0]]
    results = []
    for plugin in PLUGINS:
        run, limit = runs[plugin], runs[f"{RECVLOGICAL} {plugin}"]
        results.append(
            dict(
                case=f"LOG_BASED {args.changes}-change backlog, {plugin}"
                + (" (baseline)" if run is baseline else "")
                + ("" if shape == "small" else f", {LOG_SHAPES[shape]}"),
                rows=args.changes,
                run=run,
                baseline=baseline,
                plugin=plugin,
                shape=shape,
                wall_ratio=turn_ratio(run, baseline, "seconds"),
                cpu_ratio=turn_ratio(run, baseline, "server_cpu_s"),
                recvlogical=limit,
                recvlogical_ratio=turn_ratio(run, limit, "seconds"),
                log_table_only=shape != "small",
            )
        )
    for plugin in PLUGINS:
        results.append(
            dict(
                case=f"pg_recvlogical {args.changes}-change backlog, {plugin}, to /dev/null"
                + ("" if shape == "small" else f", {LOG_SHAPES[shape]}"),
                rows=args.changes,
                run=runs[f"{RECVLOGICAL} {plugin}"],
                baseline=None,
                recvlogical_of=plugin,
                shape=shape,
                log_table_only=shape != "small" or plugin != "pgoutput",
            )
        )
    if peer:
        print("  pipelinewise LOG_BASED (one run)...", flush=True)
        config = json.loads((WORK / "config.json").read_text()) | {"tap_id": "peer", "logical_poll_total_seconds": 2}
        (WORK / "config-peer.json").write_text(json.dumps(config))
        (WORK / "catalog-peer-log-based.json").write_text(
            json.dumps(select(peer_catalog, "public-changes", "LOG_BASED"))
        )
        # pipelinewise stops at its end LSN only when a later message arrives; on an idle database it
        # waits logical_poll_total_seconds for one, so that wait is cut short (it is in its wall time)
        command = [
            str(peer),
            "-c",
            str(WORK / "config-peer.json"),
            "--catalog",
            str(WORK / "catalog-peer-log-based.json"),
        ]
        results[0]["peer"] = measure([*command, "--state", str(WORK / "state-wal2json.json")])
    return results


def measure_log_families(bench: LogBench, catalog: dict) -> list[dict]:
    """One run per plugin on one transaction of inserts into a table of three columns of one type family, per family.

    Where each family is rendered shows in the server's CPU: the tap renders some families itself
    (local_render), the server the rest; the tap's CPU per change is its decoding and, for the
    former, its rendering.
    """
    args, session = bench.args, bench.session
    if not args.family_changes:
        return []
    print(
        f"measuring LOG_BASED per type family ({len(FAMILIES)} backlogs of {args.family_changes} inserts)...",
        flush=True,
    )
    results = []
    for n, family in enumerate(FAMILIES):
        session.drop_slots()
        for plugin in PLUGINS:
            session.create_slot(f"pipelinewise_bench_fam{n}_{plugin}", plugin)
        lsn = session.lsn()
        psql(bench.port, "bench", f"BEGIN; {family_backlog_sql(n, family, args.family_changes)} COMMIT; CHECKPOINT;")
        for plugin in PLUGINS:
            tap_id = f"fam{n}_{plugin}"
            run = measure(bench.tap_command(tap_id, bench.config(tap_id, plugin), catalog, [f"public-fam{n}"], lsn))
            if run.out_lines < args.family_changes:
                raise RuntimeError(f"LOG_BASED family {family}, {plugin}: {run.out_lines} lines")
            results.append(
                dict(
                    case=f"LOG_BASED {family} family, {plugin}",
                    backlog=f"family: 3 x {family}, one transaction (one run)",
                    rows=args.family_changes,
                    run=run,
                    baseline=None,
                    plugin=plugin,
                    shape="family",
                    log_table_only=True,
                )
            )
    return results


def measure_log_memory(bench: LogBench, catalog: dict) -> list[dict]:
    """Peak RSS of one run per plugin on one transaction of args.huge_changes inserts, and on one touching 100 tables.

    The 100 tables' transaction holds args.many_table_changes changes of each: a stream's batch
    is rendered once it holds BATCH_CHANGES, and pending batches of every stream wait for the
    transaction's end, so this is the most a LOG_BASED run holds at once.
    """
    args, session = bench.args, bench.session
    results = []
    many = [f"public-m{t}" for t in range(1, MANY_TABLES + 1)]
    cases = [
        ("huge", ["public-changes"], INSERTS_SQL.replace("__ROWS__", str(args.huge_changes)), args.huge_changes),
        (
            "many",
            many,
            MEMORY_CHANGES_SQL.replace("__TABLES__", str(MANY_TABLES)).replace(
                "__ROWS__", str(args.many_table_changes)
            ),
            MANY_TABLES * args.many_table_changes,
        ),
    ]
    for name, streams, changes_sql, changes in cases:
        what = (
            f"one {changes}-change transaction"
            if name == "huge"
            else f"one {changes}-change transaction on {MANY_TABLES} tables"
        )
        print(f"measuring LOG_BASED memory on {what}...", flush=True)
        session.drop_slots()
        tap_ids = {plugin: plugin if name == "huge" else f"many_{plugin}" for plugin in PLUGINS}
        for plugin, tap_id in tap_ids.items():
            session.create_slot(f"pipelinewise_bench_{tap_id}", plugin)
        lsn = session.lsn()
        psql(bench.port, "bench", f"BEGIN; {changes_sql} COMMIT; CHECKPOINT;")
        for plugin, tap_id in tap_ids.items():
            run = measure(bench.tap_command(tap_id, bench.config(tap_id, plugin), catalog, streams, lsn))
            if run.out_lines < changes:
                raise RuntimeError(
                    f"LOG_BASED memory case {what}, {plugin}: {run.out_lines} lines for {changes} changes"
                )
            results.append(
                dict(
                    case=f"LOG_BASED {what}, {plugin} (memory, one run)",
                    backlog=f"memory: {what} (one run)",
                    rows=changes,
                    run=run,
                    baseline=None,
                    plugin=plugin,
                    shape=name,
                    memory=True,
                    log_table_only=True,
                )
            )
    return results


@dataclass
class LoadRun:
    """One sustained-load run: the writer's rate, each record's commit-to-stdout latency, how the tap stopped."""

    plugin: str
    rate: int
    committed: int  # rows the writer committed
    received: int  # of them, RECORD lines read from the tap
    achieved_rate: float  # rows per second between the first and the last commit
    latencies: list[float]  # seconds, per record
    freshness_slope: float | None  # growth of the newest record's lag, seconds per second of load
    last_lag: float | None  # the last row's latency: how far behind the tap was when the writer stopped
    exit_code: int | None
    slot_ok: bool

    @property
    def sustained(self) -> bool:
        """Kept up: every row arrived, and the newest record's lag did not grow while the writer wrote."""
        return self.received == self.committed and (self.freshness_slope is None or self.freshness_slope < 0.05)


def measure_latency(bench: LogBench, catalog: dict) -> list[dict]:
    """The tap streams (break_at_end_lsn off) while a writer commits small transactions at each rate; one run each."""
    results = []
    for rate in bench.args.latency_rates:
        for plugin in PLUGINS:
            print(f"measuring LOG_BASED latency at {rate} changes/s through {plugin}...", flush=True)
            run = measure_load(bench, catalog, plugin, rate)
            results.append(dict(case=f"latency {plugin} {rate}", latency=run))
    return results


def measure_load(bench: LogBench, catalog: dict, plugin: str, rate: int) -> LoadRun:
    """Stream ticks through `plugin` while the writer commits `rate` changes/s, then stop the tap with SIGTERM."""
    session, seconds = bench.session, bench.args.latency_seconds
    tap_id = f"ticks_{plugin}"
    slot = f"pipelinewise_bench_{tap_id}"
    session.execute("TRUNCATE ticks")
    session.drop_slots()
    session.create_slot(slot, plugin)
    lsn = session.lsn()
    config = bench.config(tap_id, plugin, break_at_end_lsn=False, logical_poll_total_seconds=3600)
    command = bench.tap_command(tap_id, config, catalog, ["public-ticks"], lsn)
    stderr = (WORK / f"latency-{tap_id}.log").open("wb")
    tap = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    deadline = time.monotonic() + 60
    while not (session.slot(slot) or (False,))[0]:  # streaming once its walsender holds the slot
        if tap.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the tap did not start streaming: see {stderr.name}")
        time.sleep(0.05)
    # one more transaction: a load of an exact multiple of STATE_EVERY_CHANGES (20000) ends on a STATE
    # that does not wait for its records, which then wait for the next one, 10 s on (bench/NOTES.md)
    transactions = rate * seconds // TICK_ROWS + 1
    writer = subprocess.Popen(
        psql_command(bench.port, "bench", "-q", "-v", "ON_ERROR_STOP=1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    writer.stdin.write(
        TICKS_SQL.replace("__TRANSACTIONS__", str(transactions))
        .replace("__INTERVAL__", repr(TICK_ROWS / rate))
        .replace("__ROWS__", str(TICK_ROWS))
        .encode()
    )
    writer.stdin.close()
    committed = transactions * TICK_ROWS
    stamps, arrivals, writer_end = read_ticks(tap, writer, committed, seconds)
    tap.send_signal(signal.SIGTERM)
    try:
        exit_code = tap.wait(timeout=30)
    except subprocess.TimeoutExpired:
        tap.kill()
        exit_code = tap.wait()
    tap.stdout.close()
    stderr.close()
    if writer.wait() != 0:
        raise RuntimeError(f"the latency writer failed at {rate} changes/s")
    held = session.slot(slot)
    deadline = time.monotonic() + 10
    while held is not None and held[0] and time.monotonic() < deadline:  # its walsender may take a moment to go
        time.sleep(0.1)
        held = session.slot(slot)
    # After SIGTERM the slot is free and would send every row again: no target saved anything, so
    # the tap must not have confirmed a change. (Its position alone is no test: psycopg2 confirms a
    # keepalive's end by itself while no change has come yet, a few bytes past the starting state.)
    left = None if held is None or held[0] else session.inserts_left(slot, plugin, f"pipelinewise_bench_{tap_id}")
    slot_ok = left == committed
    if not slot_ok:
        print(
            f"  warning: slot {slot} after SIGTERM: {held} (in use, confirmed up to), {left} of {committed} rows left"
        )
    latencies = [arrival - stamp for stamp, arrival in zip(stamps, arrivals, strict=True)]
    span = (max(stamps) - min(stamps)) if len(stamps) > 1 else 0.0
    return LoadRun(
        plugin,
        rate,
        committed,
        len(stamps),
        (len(stamps) - 1) / span if span else 0.0,
        latencies,
        freshness_slope(stamps, arrivals, writer_end),
        arrivals[-1] - stamps[-1] if len(stamps) == committed else None,
        exit_code,
        slot_ok,
    )


def read_ticks(
    tap: subprocess.Popen, writer: subprocess.Popen, committed: int, seconds: int
) -> tuple[list, list, float]:
    """Read the tap's RECORD lines as they come; return each row's commit stamp and arrival time, and when the
    writer ended (epoch seconds).

    Stops once every committed row arrived, or 30 s after the writer ended (a tap that fell behind).
    """
    stamps, arrivals = [], []
    give_up = time.monotonic() + seconds * 3 + 60
    lines = tap.stdout
    done = threading.Event()
    writer_end = [float("inf")]

    def watch() -> None:  # ends the read when the rows never all come
        writer.wait()
        writer_end[0] = time.time()
        deadline = min(give_up, time.monotonic() + 30)
        while not done.wait(0.2):
            if time.monotonic() > deadline:
                tap.send_signal(signal.SIGTERM)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for line in lines:
        now = time.time()
        if line.startswith(b'{"type":"RECORD"'):
            stamps.append(orjson.loads(line)["record"]["committed_us"] / 1e6)
            arrivals.append(now)
            if len(stamps) >= committed:
                break
    done.set()
    watcher.join(1)
    return stamps, arrivals, writer_end[0]


def freshness_slope(stamps: list[float], arrivals: list[float], writer_end: float) -> float | None:
    """Return how fast the lag of the newest record read grows while the writer writes, in seconds per second.

    The tap writes records in bursts (a rendered batch, a STATE's flush), so a record's latency
    saws up and down with its place in a burst; the newest record of each second of arrivals shows
    how far behind the tap's reading is, which stays level while it keeps up and grows when it
    does not.
    """
    newest: dict[int, float] = {}
    for stamp, arrival in zip(stamps, arrivals, strict=True):
        if arrival > writer_end:  # what follows is the tap's last records after the load, not the load
            break
        second = int(arrival)
        newest[second] = min(newest.get(second, float("inf")), arrival - stamp)
    if len(newest) < 5:  # bursts seconds apart: too few to tell a trend from the sawtooth
        return None
    return statistics.linear_regression(list(newest), list(newest.values())).slope


def cpu_cell(seconds: float | None) -> str:
    """Return CPU seconds; empty when unknown."""
    return "" if seconds is None else f"{seconds:.2f}"


def per_100k_cell(seconds: float | None, rows: int | None) -> str:
    """Return CPU seconds per 100k rows; empty when either is unknown."""
    return "" if seconds is None or not rows else f"{seconds * 100_000 / rows:.2f}"


def main_table(results: list[dict]) -> str:
    header = (
        "| case | rows | wall s | rows/s | MB/s out | peak RSS MB | server CPU s | server CPU s / 100k rows "
        "| time / baseline | pipelinewise wall s | rows/s ours / theirs |"
    )
    lines = [header, "|" + " --- |" * 11]
    for result in results:
        run, rows, baseline, theirs = result["run"], result["rows"], result["baseline"], result.get("peer")
        rate = f"{rows / run.seconds:,.0f}" if rows else ""
        mb_s = f"{run.out_bytes / run.seconds / 1e6:.1f}" if run.out_bytes else ""
        vs_baseline = ""
        if baseline and baseline is not run:
            vs_baseline = f"{result.get('wall_ratio') or run.seconds / baseline.seconds:.2f}x"
        peer_cells = ["", ""]
        if theirs:
            peer_cells = [f"{theirs.seconds:.1f}", f"{theirs.seconds / run.seconds:.1f}x"]
        cells = [
            result["case"],
            str(rows or ""),
            f"{run.seconds:.2f}",
            rate,
            mb_s,
            f"{run.rss_mb:.0f}",
            cpu_cell(run.server_cpu_s),
            per_100k_cell(run.server_cpu_s, rows),
            vs_baseline,
            *peer_cells,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(results: list[dict]) -> str:
    """The FULL_TABLE scaling cases: wall time, ratio to psql, server CPU per million rows and per session."""
    header = (
        "| case | rows | wall s | rows/s | time / psql \\copy | server CPU s | server CPU s / 1M rows "
        "| tap CPU s | re-sent share |"
    )
    lines = [header, "|" + " --- |" * 9]
    for result in results:
        run, rows, baseline = result["run"], result["rows"], result["baseline"]
        ratio = "" if run is baseline else f"{result.get('wall_ratio') or run.seconds / baseline.seconds:.2f}x"
        per_million = "" if run.server_cpu_s is None else f"{run.server_cpu_s * 1e6 / rows:.2f}"
        resent = f"{result['resent']:.3f}" if "resent" in result else ""
        cells = [
            result["case"],
            str(rows),
            f"{run.seconds:.2f}",
            f"{rows / run.seconds:,.0f}",
            ratio,
            cpu_cell(run.server_cpu_s),
            per_million,
            f"{run.cpu_s:.2f}",
            resent,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_based_table(results: list[dict]) -> str:
    """One row per shape and reader: speed against pg_recvlogical, peak RSS, and the server's CPU per 100k changes, split."""
    header = (
        "| backlog | reader | wall s (min-max) | changes/s | wall / pg_recvlogical | tap CPU s | peak RSS MB "
        "| server CPU s / 100k changes | decoding (walsender) | rendering (other backends) | rendering / decoding "
        "| wall / wal2json |"
    )
    lines = [header, "|" + " --- |" * 12]
    for result in results:
        if "shape" not in result:
            continue
        run, changes = result["run"], result["rows"]
        shape = result.get("backlog") or f"{changes} changes, " + (
            "transactions of 1000" if result["shape"] == "small" else "one transaction"
        )
        reader = (
            f"pg_recvlogical, {result['recvlogical_of']}"
            if "recvlogical_of" in result
            else f"tap-postgres, {result['plugin']}"
        )
        rows = [(reader, run, result)]
        if "peer" in result:
            rows.append(("pipelinewise, wal2json (one run)", result["peer"], {"rows": changes}))
        for name, each, about in rows:
            lines.append("| " + " | ".join([shape, name, *log_cells(each, changes, about)]) + " |")
    return "\n".join(lines)


def log_cells(run: Run, changes: int, result: dict) -> list[str]:
    """Return a LOG_BASED row's figures: the ratios are the medians of each turn's (turn_ratio)."""
    walls = [r.seconds for r in run.runs] or [run.seconds]
    decoding = rendering = None
    if run.server_cpu_s is not None:
        decoding, rendering = run.walsender_cpu_s, run.server_cpu_s - run.walsender_cpu_s
    split = f"{rendering / decoding:.2f}" if decoding and rendering is not None else ""
    recvlogical = result.get("recvlogical_ratio")
    wal2json = result.get("wall_ratio") if result.get("baseline") is not result.get("run") else None
    return [
        f"{run.seconds:.2f} ({min(walls):.2f}-{max(walls):.2f})" if len(walls) > 1 else f"{run.seconds:.2f}",
        f"{changes / run.seconds:,.0f}",
        f"**{recvlogical:.2f}x**" if recvlogical else "",
        f"{run.cpu_s:.2f}",
        f"{run.rss_mb:.0f}",
        per_100k_cell(run.server_cpu_s, changes),
        per_100k_cell(decoding, changes),
        per_100k_cell(rendering, changes),
        split if "recvlogical_of" not in result else "",
        f"{wal2json:.2f}x" if wal2json else "",
    ]


def latency_table(results: list[dict]) -> str:
    """One row per rate and plugin of the sustained-load case."""
    header = (
        "| plugin | writer changes/s (asked) | writer changes/s (done) | rows | latency p50 s | p99 s | max s "
        "| last row s | newest lag growth ms/s | kept up | SIGTERM exit | slot after |"
    )
    lines = [header, "|" + " --- |" * 12]
    best: dict[str, int] = {}
    for result in results:
        if "latency" not in result:
            continue
        run: LoadRun = result["latency"]
        ordered = sorted(run.latencies)

        def quantile(q: float, ordered: list[float] = ordered) -> str:
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.2f}" if ordered else ""

        if run.sustained:
            best[run.plugin] = max(best.get(run.plugin, 0), run.rate)
        cells = [
            run.plugin,
            f"{run.rate:,}",
            f"{run.achieved_rate:,.0f}",
            f"{run.received}/{run.committed}",
            quantile(0.5),
            quantile(0.99),
            f"{ordered[-1]:.2f}" if ordered else "",
            "" if run.last_lag is None else f"{run.last_lag:.2f}",
            "" if run.freshness_slope is None else f"{run.freshness_slope * 1000:.0f}",
            "yes" if run.sustained else "**no**",
            str(run.exit_code),
            "free, every row still in it" if run.slot_ok else "**wrong**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if best:
        lines.append("")
        lines.append(
            "Highest rate kept up: "
            + "; ".join(f"{plugin} {rate:,} changes/s" for plugin, rate in best.items())
            + " (of the rates tried)."
        )
    return "\n".join(lines)


def report(results: list[dict], args, peer: Path | None, duration: float) -> None:
    table = main_table(
        [r for r in results if not r.get("scale") and not r.get("log_table_only") and "latency" not in r]
    )
    scaling = scale_table([result for result in results if result.get("scale")])
    log_table = log_based_table(results)
    load_table = latency_table(results)
    pg_version = subprocess.run(
        [str(pgcluster.bin_dir() / "postgres"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    ours_version = version_of(Path(sys.executable).parent / "tap-postgres", "tap-postgres")
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    env = [f"{name}={value}" for name, value in os.environ.items() if name.startswith("BENCH_")]
    command = "make bench" + (" PEERS=1" if peer else "")
    if env or any(arg != "--peers" for arg in sys.argv[1:]):
        command = " ".join([*env, ".venv/bin/python bench/run_bench.py", *sys.argv[1:]])
    context = [
        f"Run on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `{command}`, "
        f"in {duration / 60:.1f} min (cluster, data and every case).",
        f"Machine: {os.cpu_count()} cores, {memory_gb:.0f} GiB, {platform.platform()}; {pg_version}; "
        f"Python {platform.python_version()}; tap-postgres {ours_version}"
        + (f"; {PEER_PACKAGE} {version_of(peer, PEER_PACKAGE)} (Python < 3.10 venv, one run per case)" if peer else "")
        + f". The tap, the server and anything else running (load average {args.load:.1f} at the start) share "
        "these cores: compare the ratios, measured in the same run, rather than the absolute figures.",
        f"Ours and psql: median of {args.repeat} runs ({args.log_based_repeat} of each LOG_BASED plugin, in turns). Output is read from a pipe as a target would. "
        "`time / baseline` is our wall time over the baseline's measured in the same run: "
        "`psql \\copy (select * from t) to /dev/null` for the tables, wal2json for LOG_BASED; "
        "`rows/s ours / theirs` is pipelinewise's wall time over ours.",
        "Server CPU is the user and system CPU time of every server process that served the run "
        "(backends, walsenders, parallel workers): each adds its CPU time to the postmaster's "
        "`cutime`/`cstime` (`/proc/<postmaster>/stat`) when it exits and is reaped, so the change of "
        "those over the run is exact to the clock tick, however short-lived the backend (sampling "
        "/proc/<pid>/stat would lose what a backend spends after the last sample). Nothing else connects during a run "
        "(the LOG_BASED cases' one session for slots stays connected and idle through them) "
        "and autovacuum is off, so no other backend exits in between (the bench warns if one does); "
        "the postmaster's long-lived helpers (checkpointer, WAL writer) are not counted.",
        "INCREMENTAL runs start with no bookmark, so they emit every row in key order.",
        "LOG_BASED reads a backlog of committed changes (half updates, half inserts, 1000 per transaction) "
        "from a saved `lsn`, each tap and plugin through a slot of its own, created before the backlog "
        "(pgoutput's after its publication `FOR TABLE public.changes`); our two plugins are run in turns. "
        "pipelinewise's time includes up to 2 s (logical_poll_total_seconds) waiting for a message past its "
        "end LSN before it stops; ours stops when a keepalive shows it reached that LSN. This table shows "
        "that backlog; the LOG_BASED table below has it in one transaction too, and memory and latency.",
    ]
    scale_context = [
        "## FULL_TABLE by block ranges: sessions, a table without a key, a resume",
        "",
        "The wide table and `wide_nokey` (the same rows, no primary key), copied with full_table_sessions "
        "= 1, 2, 4, each case taking turns with `psql \\copy` of the same table (the ratio is the median of "
        "each turn's). The resume case kills a 2-session copy of `wide_nokey` (SIGKILL) once half its rows "
        "were read, then reruns from the last STATE read: its time and rows are the rerun's (median of the "
        "reruns from that one state), the re-sent share the rows both runs sent over the table's rows. "
        "Server CPU per million rows is what a plan for a larger table scales; see docs/scale.md.",
    ]
    log_context = [
        "## LOG_BASED: speed against pg_recvlogical, the cost to the primary, memory",
        "",
        f"Load average at the start of the LOG_BASED cases: {getattr(args, 'log_load', args.load):.1f}. "
        "Two backlogs of the same changes (half updates, half inserts, on a 5-column table): many small "
        "transactions (1000 changes each) and one transaction. On each, our tap through each plugin and "
        "`pg_recvlogical` through the same plugin with the tap's options, writing to /dev/null (the "
        "walsender's own limit), take turns; each run reads through a slot made before the backlog "
        "(pg_recvlogical's is a fresh copy of one, as it confirms what it reads). `wall / pg_recvlogical` "
        "is the median of each turn's ratio of our time over pg_recvlogical's through the same plugin; "
        "`wall / wal2json` likewise over our wal2json run. Server CPU is split into decoding (the "
        "walsender, sampled from /proc every 50 ms while it lives) and rendering (every other backend of "
        "the run: the sessions that render the changes into RECORD lines and answer the catalog "
        "queries; the exact total less decoding). The memory rows are one run per plugin, their peak RSS "
        f"the point (the aim: under 150 MB): one transaction of {args.huge_changes} inserts, and one "
        f"transaction of {args.many_table_changes} inserts into each of {MANY_TABLES} ten-column tables "
        "streamed at once (a stream's batch renders at BATCH_CHANGES; every stream's smaller batches "
        "wait for the transaction's end). The family rows are one run per plugin on one transaction of "
        f"{args.family_changes} inserts into a table of a bigint key and three columns of one type family: "
        "the families the tap renders itself (sync/local_render.py) show a small rendering share (the "
        "run's catalog queries and sessions, about 0.05 s whatever the backlog), the others what the "
        "server spends rendering them.",
    ]
    load_context = [
        "## LOG_BASED latency under sustained load",
        "",
        f"The tap streams with `break_at_end_lsn` false while a writer (one psql session) commits "
        f"transactions of {TICK_ROWS} inserts on a schedule, at each rate for {args.latency_seconds} s, one "
        "run per rate and plugin. Each row holds `clock_timestamp()` taken just before its COMMIT; the bench "
        "reads the tap's stdout as a target would and takes each RECORD's latency as the time it was read "
        "less that stamp (one clock, one machine). `writer changes/s (done)` is what the writer reached "
        "(a loaded machine may not reach the rate asked). `newest lag growth` is the slope, over the run, "
        "of the smallest latency read in each second (the newest record the tap had written): level while "
        "the tap keeps up, growing when it falls behind (buckets up to the writer's end). `kept up`: every "
        "row arrived and the newest lag grew by under 50 ms/s; `last row s` is the last row's latency, how "
        "long the records of the load's last moments waited once the writer stopped. The tap is then "
        "stopped with SIGTERM (exit 143 expected) and its slot must be free and still hold every row "
        "(counted by peeking at it): no target saved anything, so no change may be confirmed.",
    ]
    text = (
        "# Benchmark results\n\n"
        + "\n".join(context)
        + "\n\n"
        + table
        + "\n\n"
        + "\n".join(scale_context)
        + "\n\n"
        + scaling
        + "\n\n"
        + "\n".join(log_context)
        + "\n\n"
        + log_table
        + "\n\n"
        + "\n".join(load_context)
        + "\n\n"
        + load_table
        + "\n"
    )
    print("\n" + table + "\n\n" + scaling + "\n\n" + log_table + "\n\n" + load_table)
    partial = args.only != set(CASE_GROUPS)
    (WORK / "RESULTS-partial.md" if partial else ROOT / "bench" / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
