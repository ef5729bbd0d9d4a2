"""`tap-postgres | target-postgres` as two real processes, the target's STATE lines kept as PipelineWise keeps them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS_DIR = Path(os.environ.get("TAP_TARGETS_DIR", ROOT / ".venv-targets"))
TARGETS = ("pipelinewise", "meltanolabs")
TAP = [sys.executable, "-m", "tap_postgres"]


def target_executable(target: str) -> Path:
    return TARGETS_DIR / target / "bin" / "target-postgres"


def require_targets() -> None:
    """Skip (fail on CI) when tests/targets/install.sh has not installed the targets."""
    missing = [target for target in TARGETS if not target_executable(target).exists()]
    if missing:
        message = f"targets {missing} not installed: run `make targets` (bash tests/targets/install.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def target_config(target: str, server, dbname: str, schema: str, **extra) -> dict:
    """The config loading into `schema` of `dbname`: upserts by key, deletes rows the tap says are deleted."""
    connection = {"host": server.host, "port": server.port, "user": server.user, "password": server.password}
    if target == "pipelinewise":
        # hard_delete: a record with _sdc_deleted_at removes its row; views without a key may load too
        config = {**connection, "dbname": dbname, "default_target_schema": schema, "hard_delete": True}
        config["primary_key_required"] = False
    elif target == "meltanolabs":
        # validate_records is the default; spelled out because the tests rely on it
        config = {**connection, "database": dbname, "default_target_schema": schema, "hard_delete": True}
        config.update(add_record_metadata=True, validate_records=True, load_method="upsert")
    else:
        raise ValueError(target)
    return {**config, **extra}


class Pipeline:
    """One run of tap | target. Only complete lines the target printed on stdout count as saved states.

    The test process relays the tap's stdout to the target's stdin line by line, as a pipe would, so a
    test can end the tap at an exact point of its output: `cut_after_records=n` forwards the tap's
    output up to its n-th RECORD, then kills the tap and closes the target's input, which is what the
    target sees when the tap dies right after writing that record.
    """

    def __init__(
        self,
        workdir: Path,
        target: str,
        tap_config: dict,
        catalog: dict,
        state: dict | None,
        target_config: dict,
        cut_after_records: int | None = None,
    ):
        self.workdir = workdir
        self.target = target
        workdir.mkdir(parents=True, exist_ok=True)
        args = ["--config", str(self._write("tap-config.json", tap_config))]
        args += ["--catalog", str(self._write("catalog.json", catalog))]
        if state is not None:
            args += ["--state", str(self._write("state.json", state))]
        self.tap_log = workdir / "tap.stderr"
        self.target_log = workdir / "target.stderr"
        command = [str(target_executable(target)), "--config", str(self._write("target-config.json", target_config))]
        with open(self.tap_log, "wb") as tap_err, open(self.target_log, "wb") as target_err:
            self.tap = subprocess.Popen([*TAP, *args], stdout=subprocess.PIPE, stderr=tap_err)
            self.target_process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=target_err
            )
        self.cut_after_records = cut_after_records
        self.records = 0  # RECORD lines the tap wrote so far (as relayed)
        self.cut = False
        self.states: list[dict] = []
        self._relay = threading.Thread(target=self._relay_lines, daemon=True)
        self._relay.start()
        self._reader = threading.Thread(target=self._read_states, daemon=True)
        self._reader.start()

    def _write(self, name: str, content) -> Path:
        path = self.workdir / name
        path.write_text(json.dumps(content))
        return path

    def _relay_lines(self) -> None:
        sink = self.target_process.stdin
        try:
            for line in self.tap.stdout:
                sink.write(line)
                if line.startswith(b'{"type":"RECORD"'):
                    self.records += 1
                    if self.records == self.cut_after_records:
                        self.cut = True
                        self.kill(tap=True)
                        break
        except OSError:
            pass  # the target died: the tap gets EPIPE once its stdout is closed below
        finally:
            for stream in (sink, self.tap.stdout):
                try:
                    stream.close()
                except OSError:
                    pass

    def _read_states(self) -> None:
        for line in self.target_process.stdout:
            if not line.endswith(b"\n"):
                break  # a line cut by a kill was never saved
            try:
                self.states.append(json.loads(line))
            except ValueError:
                pass  # not a state (a target's stray print)

    @property
    def last_state(self) -> dict | None:
        return self.states[-1] if self.states else None

    def kill(self, tap: bool = False, target: bool = False) -> None:
        for wanted, process in ((tap, self.tap), (target, self.target_process)):
            if wanted and process.poll() is None:
                process.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 120) -> tuple[int, int]:
        """Wait for both processes; on timeout kill them and raise. Returns (tap rc, target rc)."""
        deadline = time.monotonic() + timeout
        try:
            for process in (self.tap, self.target_process):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill(tap=True, target=True)
            self._relay.join(10)
            self._reader.join(10)
            raise AssertionError(f"pipeline did not finish in {timeout} s\n{self.describe()}") from None
        self._relay.join(30)
        self._reader.join(30)
        return self.tap.returncode, self.target_process.returncode

    def alive(self) -> bool:
        return self.tap.poll() is None or self.target_process.poll() is None

    def last_tap_log_line(self) -> str:
        """The tap's last log line (not a traceback's), which tells how its run ended."""
        lines = [line for line in self.tap_log.read_text(errors="replace").splitlines() if line[:1].isdigit()]
        return lines[-1].split("| ")[-1][:300] if lines else ""

    def describe(self, tail: int = 25) -> str:
        """The exit codes and the last lines of both stderr logs, for failure messages."""
        parts = [f"tap exit {self.tap.poll()}, {self.target} target exit {self.target_process.poll()}"]
        for name, path in (("tap", self.tap_log), ("target", self.target_log)):
            lines = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {name} stderr (last {tail} lines of {len(lines)}) ---")
            parts.extend(line[:400] for line in lines[-tail:])
        return "\n".join(parts)


def run_pipeline(workdir: Path, target: str, tap_config: dict, catalog: dict, state, target_config, timeout=120):
    """Run tap | target to the end; fail with both logs unless both exit 0. Returns the Pipeline."""
    pipeline = Pipeline(workdir, target, tap_config, catalog, state, target_config)
    codes = pipeline.wait(timeout)
    if codes != (0, 0):
        raise AssertionError(f"pipeline into {target} failed\n{pipeline.describe()}")
    # the configs of the PipelineWise and Meltano runs hold only keys the tap knows: no key warning
    assert "is not a setting of tap-postgres" not in pipeline.tap_log.read_text(errors="replace")
    return pipeline


@contextlib.contextmanager
def target_database(server, name: str):
    """Create an empty database `name` on the test cluster for targets to load into; drop it afterwards."""
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn = server.connect(name)
    try:
        yield conn
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def load_into_targets(workdir: Path, output: bytes, configs: dict[str, dict], timeout: float = 120) -> None:
    """Pipe the same tap output into each target of `configs` (their configs by target) at once; fail with
    the last lines of each one's stderr that did not exit 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tap.out").write_bytes(output)
    processes = {}
    for target, config in configs.items():
        config_path = workdir / f"{target}-config.json"
        config_path.write_text(json.dumps(config))
        with open(workdir / "tap.out", "rb") as stdin, open(workdir / f"{target}.stderr", "wb") as stderr:
            command = [str(target_executable(target)), "--config", str(config_path)]
            processes[target] = subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    failures = []
    for target, process in processes.items():
        try:
            code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = f"{process.wait()} (killed after {timeout} s)"
        if code != 0:
            lines = (workdir / f"{target}.stderr").read_text(errors="replace").splitlines()
            failures.append(f"{target} exited {code}:\n" + "\n".join(line[:400] for line in lines[-25:]))
    assert not failures, "\n\n".join(failures)
