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
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
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
    measurement and autovacuum is off, so no other backend exits in the window (one that does is
    reported). The walsenders' share is sampled from /proc/<pid>/stat every POLL seconds while they
    live: they are idle at the end of a run, when the tap renders its last batches, so their last
    sample is their total.
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
        self.before = self.children()
        self.reaped_before = self._reaped()
        self.titles: dict[int, str] = {}
        self.walsenders: dict[int, float] = {}
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self._look()
            time.sleep(self.POLL)

    def _look(self) -> set[int]:
        born = self.children() - self.before
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
        return self._reaped() - self.reaped_before, sum(self.walsenders.values())


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


def measure(command: list[str], env: dict | None = None) -> Run:
    """Run a command, read its stdout as a target would, and return what it cost, to it and to the server."""
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
    cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, out_bytes, out_lines, usage.ru_maxrss / 1024, cpu, server_cpu, walsender_cpu)


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


def measure_log_based(port: int, args, ours: list[str], catalog: dict, peer: Path | None, peer_catalog) -> list[dict]:
    """Each tap and plugin reads the same backlog through a slot of its own, from a state saved before it was written.

    Our tap reads it through wal2json and through pgoutput (slots pipelinewise_bench_<tap_id>, the
    pgoutput one created after its publication), in turns; pipelinewise through wal2json. All
    confirm their slot only up to the LSN of the state they start from, so every run reads the
    whole backlog again.
    """
    print(f"writing a backlog of {args.changes} changes...", flush=True)
    taps = {plugin: (ours, catalog, plugin) for plugin in PLUGINS}
    if peer:
        taps["peer"] = ([str(peer)], peer_catalog, "wal2json")
    setup = []
    for name, (_, _, plugin) in taps.items():
        if plugin == "pgoutput":  # the publication first: decoding reads it as of each change
            setup.append(f"CREATE PUBLICATION pipelinewise_bench_{name} FOR TABLE public.changes;")
        setup.append(f"SELECT pg_create_logical_replication_slot('pipelinewise_bench_{name}', '{plugin}');")
    # pg_recvlogical confirms its slot as it reads: each of its runs reads the backlog through a slot of its own
    setup.extend(
        f"SELECT pg_create_logical_replication_slot('{RECVLOGICAL_SLOT}{turn}', 'pgoutput');"
        for turn in range(args.log_based_repeat)
    )
    psql(port, "bench", "".join(setup))
    lsn = int(
        subprocess.run(
            psql_command(port, "bench", "-At", "-c", "SELECT (pg_current_wal_lsn() - '0/0')::bigint"),
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PGPASSWORD=pgcluster.PASSWORD),
        ).stdout
    )
    psql(port, "bench", BACKLOG_SQL.replace("__HALF__", str(args.changes // 2)) + "CHECKPOINT;")
    end_lsn = subprocess.run(
        psql_command(port, "bench", "-At", "-c", "SELECT pg_current_wal_lsn()"),
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PGPASSWORD=pgcluster.PASSWORD),
    ).stdout.strip()
    state = {"bookmarks": {"public-changes": {"last_replication_method": "LOG_BASED", "lsn": lsn, "version": 1}}}
    (WORK / "state-log-based.json").write_text(json.dumps(dict(state, currently_syncing=None)))
    commands = {}
    for name, (command, tap_catalog, plugin) in taps.items():
        # pipelinewise stops at its end LSN only when a later message arrives; on an idle database it
        # waits logical_poll_total_seconds for one, so that wait is cut short (it is in its wall time)
        config = json.loads((WORK / "config.json").read_text()) | {"tap_id": name, "logical_poll_total_seconds": 2}
        if name != "peer":
            config["output_plugin"] = plugin
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
    print(f"measuring LOG_BASED through {' and '.join(PLUGINS)}, and pg_recvlogical...", flush=True)
    os.environ["PGPASSWORD"] = pgcluster.PASSWORD  # pg_recvlogical's

    def recvlogical(turn: int) -> list[str]:
        """pg_recvlogical reading the backlog through pgoutput to /dev/null: the walsender's own limit."""
        return [
            str(pgcluster.bin_dir() / "pg_recvlogical"),
            *("-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "bench"),
            *("-S", f"{RECVLOGICAL_SLOT}{turn}", "--start", "--no-loop", "-f", "/dev/null", "-E", end_lsn),
            *("-o", "proto_version=1", "-o", "publication_names=pipelinewise_bench_pgoutput"),
        ]

    runs = median_runs(
        {**{plugin: commands[plugin] for plugin in PLUGINS}, RECVLOGICAL: recvlogical}, args.log_based_repeat
    )
    walsender_limit = runs.pop(RECVLOGICAL)
    baseline = runs[PLUGINS[0]]
    results = [
        dict(
            case=f"LOG_BASED {args.changes}-change backlog, {plugin}" + (" (baseline)" if run is baseline else ""),
            rows=args.changes,
            run=run,
            baseline=baseline,
            plugin=plugin,
            wall_ratio=turn_ratio(run, baseline, "seconds"),
            cpu_ratio=turn_ratio(run, baseline, "server_cpu_s"),
            recvlogical=walsender_limit,
            recvlogical_ratio=turn_ratio(run, walsender_limit, "seconds"),
        )
        for plugin, run in runs.items()
    ]
    results.append(
        dict(
            case=f"pg_recvlogical {args.changes}-change backlog, pgoutput, to /dev/null",
            rows=args.changes,
            run=walsender_limit,
            baseline=None,
        )
    )
    if peer:
        print("  pipelinewise LOG_BASED (one run)...", flush=True)
        results[0]["peer"] = measure(commands["peer"])
    return results


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
    """One row per plugin (and pipelinewise's run): speed, and CPU on each side per 100k changes."""
    header = (
        "| tap, plugin | wall s (min-max) | changes/s | tap CPU s | server CPU s | walsender | other backends "
        "| server CPU s / 100k changes | wall / wal2json | server CPU / wal2json | wall / pg_recvlogical |"
    )
    lines = [header, "|" + " --- |" * 11]
    plugin_results = [r for r in results if "plugin" in r]
    rows_of = [(f"tap-postgres, {r['plugin']}", r["run"], r) for r in plugin_results]
    if plugin_results and "peer" in plugin_results[0]:
        first = plugin_results[0]
        rows_of.append(
            (
                "pipelinewise, wal2json (one run)",
                first["peer"],
                dict(first, wall_ratio=None, cpu_ratio=None, recvlogical_ratio=None),
            )
        )
    if plugin_results:
        first = plugin_results[0]
        limit = dict(first, wall_ratio=None, cpu_ratio=None, recvlogical_ratio=None)
        rows_of.append(("pg_recvlogical, pgoutput, to /dev/null (decoding alone)", first["recvlogical"], limit))
    for name, run, result in rows_of:
        changes, baseline = result["rows"], result["baseline"]
        walls = [r.seconds for r in run.runs] or [run.seconds]
        others = None if run.server_cpu_s is None else run.server_cpu_s - run.walsender_cpu_s
        ratios = ["", ""]
        if run is not baseline:
            ratios[0] = f"{result['wall_ratio'] or run.seconds / baseline.seconds:.2f}x"
            if run.server_cpu_s is not None and baseline.server_cpu_s:
                ratios[1] = f"{result['cpu_ratio'] or run.server_cpu_s / baseline.server_cpu_s:.2f}x"
        cells = [
            name,
            f"{run.seconds:.2f} ({min(walls):.2f}-{max(walls):.2f})",
            f"{changes / run.seconds:,.0f}",
            f"{run.cpu_s:.2f}",
            cpu_cell(run.server_cpu_s),
            cpu_cell(run.walsender_cpu_s),
            cpu_cell(others),
            f"**{per_100k_cell(run.server_cpu_s, changes)}**" if run.server_cpu_s is not None else "",
            *ratios,
            f"{result['recvlogical_ratio']:.2f}x" if result.get("recvlogical_ratio") else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[dict], args, peer: Path | None, duration: float) -> None:
    table = main_table([result for result in results if not result.get("scale")])
    scaling = scale_table([result for result in results if result.get("scale")])
    log_table = log_based_table(results)
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
        "and autovacuum is off, so no other backend exits in between (the bench warns if one does); "
        "the postmaster's long-lived helpers (checkpointer, WAL writer) are not counted.",
        "INCREMENTAL runs start with no bookmark, so they emit every row in key order.",
        "LOG_BASED reads a backlog of committed changes (half updates, half inserts, 1000 per transaction) "
        "from a saved `lsn`, each tap and plugin through a slot of its own, created before the backlog "
        "(pgoutput's after its publication `FOR TABLE public.changes`); our two plugins are run in turns. "
        "pipelinewise's time includes up to 2 s (logical_poll_total_seconds) waiting for a message past its "
        "end LSN before it stops; ours stops when a keepalive shows it reached that LSN.",
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
        "## LOG_BASED: speed, and the cost to the primary",
        "",
        "Per plugin: the tap's wall time (median; min-max of the runs), changes per second, the tap "
        "process's own CPU, and the server's CPU seconds serving the run: the walsender that decodes "
        "the WAL through the plugin, plus the tap's other backends, which render the changes into "
        "RECORD lines (the same JSON for both plugins) and answer its catalog queries. The walsender's "
        "share is its `/proc/<pid>/stat` utime+stime sampled every 50 ms while it lives (it idles "
        "while the tap renders its last batches, so the last sample is its total); the other "
        "backends' share is the exact total less it. The ratios to wal2json are the medians of each turn's "
        "ratio (the two plugins' runs follow each other); pipelinewise's is over wal2json's median. "
        "pipelinewise renders the values in Python, so its server CPU is nearly all its walsender's; "
        "ours has the server render them with FULL_TABLE's expressions (the other backends' column).",
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
        + "\n"
    )
    print("\n" + table + "\n\n" + scaling + "\n\n" + log_table)
    partial = args.only != set(CASE_GROUPS)
    (WORK / "RESULTS-partial.md" if partial else ROOT / "bench" / "RESULTS.md").write_text(text)


if __name__ == "__main__":
    main()
