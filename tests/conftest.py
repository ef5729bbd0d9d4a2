"""Fixtures: one private PostgreSQL per test session, a fresh database per test module, and the real CLI."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pgcluster  # noqa: E402

from tap_postgres.publication import marker_statement  # noqa: E402

TAP = [sys.executable, "-m", "tap_postgres"]


@dataclass
class Server:
    """A running test cluster."""

    port: int
    data_dir: Path
    host: str = "127.0.0.1"
    user: str = pgcluster.SUPERUSER
    password: str = pgcluster.PASSWORD

    def connect(self, dbname: str = "postgres", **kwargs):
        """Open an autocommit connection as the superuser."""
        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname, **kwargs
        )
        conn.autocommit = True
        return conn

    @functools.cached_property
    def has_wal2json(self) -> bool:
        """Tell whether the server can load wal2json (Debian's 15 can; the pinned builds of
        tests/pgversions.py cannot): a temporary slot of that plugin is made and dropped."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_create_logical_replication_slot('tap_postgres_probe', 'wal2json', true)")
            return True
        except psycopg2.errors.UndefinedFile:
            return False
        finally:
            conn.close()  # drops the temporary slot

    @functools.cached_property
    def version_num(self) -> int:
        """The server's server_version_num, 150013 for 15.13."""
        conn = self.connect()
        try:
            return conn.server_version
        finally:
            conn.close()


@contextlib.contextmanager
def private_cluster(prefix: str = "tap-postgres-test-", binaries: Path | None = None):
    """Start a PostgreSQL cluster with wal_level=logical on a free port (from `binaries`, default the
    session's: pgcluster.bin_dir()); stop and remove it at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    port = pgcluster.start(data_dir, binaries=binaries)
    try:
        yield Server(port=port, data_dir=data_dir)
    finally:
        pgcluster.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def statements_cluster(prefix: str = "tap-postgres-statements-"):
    """A private cluster of the session's binaries with pg_stat_statements in shared_preload_libraries
    (the session's cluster has none), for the catalog streams' statement usage."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    port = pgcluster.start(data_dir)
    pgcluster.stop(data_dir)
    with open(data_dir / "postgresql.conf", "a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
    pgcluster.start(data_dir, port)
    try:
        yield Server(port=port, data_dir=data_dir)
    finally:
        pgcluster.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    """The test session's cluster."""
    with private_cluster() as cluster:
        yield cluster


@dataclass
class Database:
    """A fresh database of its own, with helpers to change it and to run the tap on it."""

    server: Server
    name: str
    tmp_dir: Path
    conn: object = field(default=None)
    # the output plugin of the slots create_slot makes, and of the config; pgoutput on servers
    # without wal2json (the db fixture chooses)
    plugin: str = "wal2json"

    @property
    def default_plugin(self) -> str:
        """wal2json, as pipelinewise reads, where the server has it; else pgoutput."""
        return "wal2json" if self.server.has_wal2json else "pgoutput"

    @property
    def config(self) -> dict:
        """The tap config that reaches this database."""
        config = {
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.user,
            "password": self.server.password,
            "dbname": self.name,
        }
        if self.plugin == "pgoutput":
            # the tap keeps pgoutput's publication equal to each run's LOG_BASED tables
            config.update(output_plugin="pgoutput", create_replication_slot=True)
        return config

    def execute(self, statement: str, params=None) -> None:
        """Run SQL in autocommit mode."""
        with self.conn.cursor() as cur:
            cur.execute(statement, params)

    def query(self, statement: str, params=None) -> list[tuple]:
        """Run a query and return its rows."""
        with self.conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def write_json(self, name: str, content) -> Path:
        """Write a JSON file for the tap in the module's temp dir."""
        path = self.tmp_dir / name
        path.write_text(json.dumps(content))
        return path

    def run_tap(self, *args: str, config: dict | None = None, check: bool = True, timeout: float = 120):
        """Run the real CLI as a subprocess; return (messages, stderr, returncode)."""
        config_path = self.write_json("config.json", config if config is not None else self.config)
        result = subprocess.run([*TAP, "--config", str(config_path), *args], capture_output=True, timeout=timeout)
        stderr = result.stderr.decode()
        if check and result.returncode != 0:
            raise AssertionError(f"tap exited {result.returncode}:\n{stderr}")
        lines = result.stdout.decode().splitlines()
        return lines, stderr, result.returncode

    @contextlib.contextmanager
    def login_role(self, name: str, password: str, *grants: str):
        """Create a login role with these grants (`{role}` stands for its name); yield the tap config that
        logs in as it, then drop it and what it owns."""
        self.execute(f"DROP ROLE IF EXISTS {name}")
        self.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        for grant in grants:
            self.execute(grant.format(role=name))
        try:
            yield dict(self.config, user=name, password=password)
        finally:
            self.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")

    def try_sync(
        self, catalog: dict, config: dict | None = None, state: dict | None = None
    ) -> tuple[list[dict], list[str], int]:
        """Run a sync that may fail; return its messages, its stderr lines and its exit code."""
        args = ["--catalog", str(self.write_json("catalog.json", catalog))]
        if state is not None:
            args += ["--state", str(self.write_json("state.json", state))]
        lines, stderr, code = self.run_tap(*args, config=config, check=False)
        return [json.loads(line) for line in lines], stderr.strip().splitlines(), code

    def start_sync(self, catalog: dict, config: dict, state: dict | None = None) -> subprocess.Popen:
        """Start a sync in the background, its stdout and stderr piped, for tests that interrupt it."""
        args = ["--config", str(self.write_json("config-background.json", config))]
        args += ["--catalog", str(self.write_json("catalog-background.json", catalog))]
        if state is not None:
            args += ["--state", str(self.write_json("state-background.json", state))]
        return subprocess.Popen([*TAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def create_slot(self, name: str | None = None) -> str:
        """Create the slot the tap reads (pipelinewise_<dbname> by default); the fixture drops it.

        For pgoutput, its publication (named like the slot) is created first, empty and marked as
        the tap marks its own: decoding reads it as of each change, so it must be older than the slot.
        """
        name = name or f"pipelinewise_{self.name}"
        if self.plugin == "pgoutput" and not self.query("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)):
            self.execute(f'CREATE PUBLICATION "{name}"')
            self.execute(marker_statement(name, name, None))
        self.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (name, self.plugin))
        return name

    def drop_slots(self) -> None:
        """Drop every slot of this database: a leaked slot holds WAL for ever."""
        for (name,) in self.query("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (self.name,)):
            self.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (name,),
            )
            self.execute("SELECT pg_drop_replication_slot(%s)", (name,))

    def discover(self, config: dict | None = None) -> dict:
        """Run --discover and return the catalog."""
        config_path = self.write_json("config.json", config if config is not None else self.config)
        result = subprocess.run([*TAP, "--config", str(config_path), "--discover"], capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)

    def sync(self, catalog: dict, state: dict | None = None, config: dict | None = None) -> list[dict]:
        """Run a sync of `catalog` (from `state`) and return the Singer messages."""
        args = ["--catalog", str(self.write_json("catalog.json", catalog))]
        if state is not None:
            args += ["--state", str(self.write_json("state.json", state))]
        lines, _, _ = self.run_tap(*args, config=config)
        return [json.loads(line) for line in lines]


def new_database(server: Server, name: str, tmp_dir: Path) -> Database:
    """Create database `name` on `server` and return it, connected (the cluster goes with its databases)."""
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    database = Database(server=server, name=name, tmp_dir=tmp_dir)
    database.conn = server.connect(name)
    return database


@pytest.fixture(scope="module")
def db(server, request, tmp_path_factory):
    """A database named after the test module, created empty and dropped afterwards."""
    name = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.split(".")[-1].lower())
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    database = Database(server=server, name=name, tmp_dir=tmp_path_factory.mktemp(name))
    database.plugin = database.default_plugin
    database.conn = server.connect(name)
    try:
        yield database
    finally:
        database.drop_slots()
        database.conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def select_all(catalog: dict, method: str = "FULL_TABLE", replication_key: str | None = None, only=None) -> dict:
    """Mark streams selected (all, or those whose tap_stream_id is in `only`) with a replication method."""
    for stream in catalog["streams"]:
        if only is not None and stream["tap_stream_id"] not in only:
            continue
        table_md = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
        table_md["selected"] = True
        table_md["replication-method"] = method
        if replication_key:
            table_md["replication-key"] = replication_key
    return catalog


def records_of(messages: list[dict], stream: str | None = None) -> list[dict]:
    """Return the record objects of RECORD messages (of one stream, if given)."""
    return [m["record"] for m in messages if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)]


def without_origin(state: dict) -> dict:
    """The state as pipelinewise reads it: each bookmark without this tap's own `origin` key."""
    bookmarks = {
        stream: {key: value for key, value in saved.items() if key != "origin"}
        for stream, saved in state["bookmarks"].items()
    }
    return {**state, "bookmarks": bookmarks}


def states_of(messages: list[dict]) -> list[dict]:
    """Return the values of STATE messages in order."""
    return [m["value"] for m in messages if m["type"] == "STATE"]


@pytest.fixture(scope="module")
def target_conn(server, db):
    """The module's target database, which tap | target pipelines (tests/targets) load into."""
    from targets.pipeline import require_targets, target_database

    require_targets()
    with target_database(server, f"{db.name}_target") as conn:
        yield conn


def pytest_terminal_summary(terminalreporter):
    """Under make fuzz, print the examples and the seed at the end, so a failing run can be repeated."""
    from generative.fuzzing import FUZZ_EXAMPLES, SEED

    if SEED is not None:
        terminalreporter.write_line(f"TAP_FUZZ_EXAMPLES={FUZZ_EXAMPLES} TAP_FUZZ_SEED={SEED}")


@pytest.fixture(autouse=True)
def _skip_without_wal2json(request):
    """Skip a test marked wal2json on a server that cannot load it (the pinned builds of make test-versions)."""
    if request.node.get_closest_marker("wal2json") and not request.getfixturevalue("server").has_wal2json:
        pytest.skip("needs wal2json, which only Debian's 15 here has (make test runs it there)")


def pytest_collection_modifyitems(items):
    """Mark every test that uses the cluster as `integration`."""
    for item in items:
        if "server" in item.fixturenames:
            item.add_marker(pytest.mark.integration)
