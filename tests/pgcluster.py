"""A private PostgreSQL cluster from the system binaries, for tests, the demo and the benchmark.

    python tests/pgcluster.py start DIR [PORT]   # prints the port; DIR is created
    python tests/pgcluster.py stop DIR

initdb refuses to run as root, so when we are root the server runs as the `postgres` OS user.
The superuser is `postgres` with password PASSWORD, over TCP on 127.0.0.1 with scram-sha-256.
`pgbouncer` starts Debian's PgBouncer in front of a cluster, as the same OS user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pgversions  # noqa: E402

PASSWORD = "tap-postgres-test-secret"
SUPERUSER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "fsync": "off",
    # on: a LOG_BASED run reads up to the WAL written when it starts, and an asynchronous commit
    # made just before may not be written yet (it comes in the next run); tests expect it in this one
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "shared_buffers": "256MB",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def bin_dir() -> Path:
    """Return the directory of initdb and pg_ctl: $PG_BIN, else the pinned build of $TAP_PG_VERSION
    (tests/pgversions.py), else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    if os.environ.get("TAP_PG_VERSION"):
        return pgversions.bin_dir(os.environ["TAP_PG_VERSION"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found: run `make deps` (apt-get install postgresql-15)")


def _knows_setting(binaries: Path, name: str) -> bool:
    """Tell whether this server build has the setting `name` (unknown ones stop it from starting)."""
    described = subprocess.run(
        _as_server_user([str(binaries / "postgres"), "--describe-config"]), capture_output=True, text=True, check=True
    )
    return any(line.split("\t", 1)[0] == name for line in described.stdout.splitlines())


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start(data_dir: Path, port: int | None = None, binaries: Path | None = None) -> int:
    """Create (if needed) and start a cluster in `data_dir` with `binaries` (default bin_dir()); return its port."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _chown_to_server_user(data_dir)
    os.chmod(data_dir, 0o700)
    port = port or free_port()
    binaries = binaries or bin_dir()
    if not (data_dir / "PG_VERSION").exists():
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".pw") as pwfile:
            pwfile.write(PASSWORD)
        os.chmod(pwfile.name, 0o644)
        try:
            subprocess.run(
                _as_server_user(
                    [
                        str(binaries / "initdb"),
                        "-D",
                        str(data_dir),
                        "-U",
                        SUPERUSER,
                        f"--pwfile={pwfile.name}",
                        "--auth-host=scram-sha-256",
                        "--auth-local=trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finally:
            os.unlink(pwfile.name)
        with open(data_dir / "postgresql.conf", "a") as conf:
            for name, value in SERVER_SETTINGS.items():
                conf.write(f"{name} = {value}\n")
            conf.write(f"unix_socket_directories = '{data_dir}'\n")
            if _knows_setting(binaries, "output_plugin_libraries"):
                # newer minor releases only let slots use listed plugins (superusers included)
                conf.write("output_plugin_libraries = 'pgoutput, test_decoding, wal2json'\n")
        with open(data_dir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 scram-sha-256\n")
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data_dir),
                "-o",
                f"-p {port}",
                "-l",
                str(data_dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (data_dir / "tap-postgres.port").write_text(str(port))
    (data_dir / "tap-postgres.bin").write_text(str(binaries))  # stop() uses the same pg_ctl
    return port


def stop(data_dir: Path) -> None:
    """Stop the cluster in `data_dir` if it runs."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "postmaster.pid").exists():
        return
    started_with = data_dir / "tap-postgres.bin"
    binaries = Path(started_with.read_text()) if started_with.exists() else bin_dir()
    subprocess.run(
        _as_server_user([str(binaries / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
        check=False,
        stdout=subprocess.DEVNULL,
    )


def wait_until_ready(port: int, timeout: float = 30.0) -> None:
    """Block until the server accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL on port {port} did not start")


@contextlib.contextmanager
def pgbouncer(server_port: int, **settings: str) -> Iterator[int]:
    """Run PgBouncer on a free port in front of the cluster on `server_port`; yield its port.

    The superuser logs in with PASSWORD (PgBouncer checks it, then logs in to the server with it).
    `settings` add to or override the [pgbouncer] section: pool_mode, default_pool_size, ...
    """
    executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(executable):
        raise RuntimeError("pgbouncer not found: run `make deps` (apt-get install pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="tap-postgres-pgbouncer-"))
    _chown_to_server_user(directory)
    port = free_port()
    options = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": str(directory / "users.txt"),
        "logfile": str(directory / "pgbouncer.log"),
        **settings,
    }
    (directory / "users.txt").write_text(f'"{SUPERUSER}" "{PASSWORD}"\n')
    lines = ["[databases]", f"* = host=127.0.0.1 port={server_port}", "[pgbouncer]"]
    (directory / "pgbouncer.ini").write_text("\n".join(lines + [f"{k} = {v}" for k, v in options.items()]) + "\n")
    for path in directory.iterdir():
        _chown_to_server_user(path)
    # it refuses to run as root; Popen's user= runs it as postgres itself, so terminate() reaches it
    as_server_user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    process = subprocess.Popen(
        [executable, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # it logs to its logfile too
        **as_server_user,
    )
    try:
        wait_until_ready(port, timeout=10)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    action, directory = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        print(start(directory, int(sys.argv[3]) if len(sys.argv) > 3 else None))
    elif action == "stop":
        stop(directory)
    else:
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR [PORT]")
