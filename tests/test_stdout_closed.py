"""A closed stdout and Ctrl-C on `tap | target`: a documented exit code and one line, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TAP, select_all

integration = pytest.mark.integration

# a target that reads a little and stops, as one does that dies on a bad record
READ_A_LITTLE_AND_EXIT = "import sys; sys.stdin.buffer.read(65536); sys.exit(3)"
# a target that dies on Ctrl-C before the tap does, as Python targets do
# and reads slowly, so the tap is mid-copy, blocked on the pipe, when Ctrl-C comes
DIE_ON_CTRL_C = "import sys, time\nwhile sys.stdin.buffer.read(8192):\n    time.sleep(0.005)"


@pytest.fixture(scope="module")
def big_table(db):
    db.execute("DROP TABLE IF EXISTS big; CREATE TABLE big (id int PRIMARY KEY, note text)")
    db.execute("INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g")
    return select_all(db.discover(), only={"public-big"})


def _pipeline(db, catalog, target_code: str) -> tuple[subprocess.Popen, subprocess.Popen]:
    args = ["--config", str(db.write_json("config.json", db.config))]
    args += ["--catalog", str(db.write_json("catalog.json", catalog))]
    # a process group of its own, as a shell gives a pipeline: Ctrl-C reaches both processes
    tap = subprocess.Popen([*TAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
    target = subprocess.Popen(
        [sys.executable, "-c", target_code], stdin=tap.stdout, stderr=subprocess.DEVNULL, process_group=tap.pid
    )
    tap.stdout.close()  # the target holds the only read end: when it exits, the pipe is closed
    return tap, target


def _error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("tap-postgres: error:")]


@integration
def test_a_target_that_stops_reading_ends_the_tap_with_141_and_one_line(db, big_table):
    tap, target = _pipeline(db, big_table, READ_A_LITTLE_AND_EXIT)
    _, stderr = tap.communicate(timeout=60)
    target.wait(timeout=10)
    assert tap.returncode == 141, stderr.decode()[-3000:]
    assert "Traceback" not in stderr.decode()
    assert "Exception ignored" not in stderr.decode()
    assert _error_lines(stderr) == [
        "tap-postgres: error: stdout was closed by the program reading it (the target stopped), so the last "
        "STATE could not be written: rerun with the state the target saved last"
    ]


@integration
def test_ctrl_c_on_a_pipeline_whose_target_dies_first_exits_130_with_one_line(db, big_table):
    tap, target = _pipeline(db, big_table, DIE_ON_CTRL_C)
    # Ctrl-C once the copy is under way: a fixed sleep was too short on a loaded machine, where the
    # tap was still starting and the Ctrl-C came before its handlers
    started = b""
    while b"Syncing public-big" not in started:
        line = tap.stderr.readline()
        assert line, started.decode()
        started += line
    time.sleep(0.5)
    os.killpg(tap.pid, signal.SIGINT)
    _, stderr = tap.communicate(timeout=60)
    stderr = started + stderr
    target.wait(timeout=10)
    assert tap.returncode == 130
    assert "Traceback" not in stderr.decode()
    assert "Exception ignored" not in stderr.decode()
    lines = _error_lines(stderr)
    assert len(lines) == 1, stderr.decode()
    assert lines[0].startswith("tap-postgres: error: interrupted")


# a target that keeps every byte it is given and reads slowly: the tap is blocked writing when SIGTERM comes
SLOW_KEEPING_TARGET = (
    "import sys, time\nout = open(sys.argv[1], 'wb')\n"
    "while block := sys.stdin.buffer.read(8192):\n    out.write(block)\n    time.sleep(0.002)\n"
)


@integration
def test_sigterm_while_the_tap_is_blocked_writing_leaves_only_whole_lines_then_the_last_state(db, big_table, tmp_path):
    # batches of 30000 rows (~8 MB) are larger than the output buffer: one was written straight from
    # its bytes, and the interrupted write left half a RECORD line with the STATE glued to it
    received = tmp_path / "received"
    config = db.write_json("config-big-batches.json", dict(db.config, itersize=30000))
    args = ["--config", str(config), "--catalog", str(db.write_json("catalog.json", big_table))]
    tap = subprocess.Popen([*TAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = subprocess.Popen([sys.executable, "-c", SLOW_KEEPING_TARGET, str(received)], stdin=tap.stdout)
    tap.stdout.close()
    started = b""
    while b"Syncing public-big" not in started:
        line = tap.stderr.readline()
        assert line, started.decode()
        started += line
    time.sleep(1.0)  # the pipe is full and the tap blocked in a write
    tap.send_signal(signal.SIGTERM)
    _, stderr = tap.communicate(timeout=60)
    target.wait(timeout=60)
    assert tap.returncode == 143, (started + stderr).decode()[-3000:]
    messages = [json.loads(line) for line in received.read_bytes().splitlines()]  # a half line fails here
    assert messages[-1]["type"] == "STATE"
    assert [m["type"] for m in messages].count("RECORD") < 200000
