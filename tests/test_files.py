"""The files the tap reads: any bytes in --config, --catalog or --state give one line, never a
traceback or a hang, and the state file polled during a run is read without blocking, in bounded
memory, and parsed again only when it changed."""

from __future__ import annotations

import contextlib
import decimal
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TAP
from generative.fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from tap_postgres import files
from tap_postgres.catalog import parse_catalog
from tap_postgres.config import merge_config_files, parse_config, read_json_file
from tap_postgres.errors import CatalogError, StateError, TapPostgresError
from tap_postgres.state import parse_state

# a server that refuses at once: a file the tap accepts ends in one "connection refused" line
CONFIG = {"host": "127.0.0.1", "port": 1, "user": "u", "password": "p", "dbname": "d"}
CATALOG = {"streams": []}
CONFIG_PATH = str(Path(__file__).parent.parent / "config.sample.json")
HOSTILE = {
    "not UTF-8": b'{"host": "\xff\xfe"}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an integer of 5,000 digits": b'{"port": ' + b"9" * 5000 + b"}",
    "a number longer than any numeric": b'{"bookmarks": {"a": {"x": ' + b"1" * 200_000 + b"}}}",
    "truncated": b'{"streams": [',
    "empty": b"",
    "a JSON string": b'"streams"',
}


def run_cli(*args: str) -> tuple[int, list[str]]:
    """Run the real CLI; return its exit code and stderr lines."""
    result = subprocess.run([*TAP, *args], capture_output=True, timeout=60)
    return result.returncode, result.stderr.decode().splitlines()


def read_as_the_tap_does(which: str, path: str) -> None:
    """Read and check one file as a sync does before it connects."""
    config = parse_config(merge_config_files([path] if which == "config" else [CONFIG_PATH]))
    if which == "catalog":
        parse_catalog(read_json_file(path, "catalog", CatalogError, parse_float=decimal.Decimal), config)
    elif which == "state":
        parse_state(read_json_file(path, "state", StateError, parse_float=decimal.Decimal))


def arguments(tmp_path, which: str, content: bytes) -> list[str]:
    """The CLI arguments of a sync whose `which` file holds `content` and whose other files are valid."""
    paths = {}
    for name, value in (("config", CONFIG), ("catalog", CATALOG), ("state", {})):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_bytes(content if name == which else json.dumps(value).encode())
    return ["--config", str(paths["config"]), "--catalog", str(paths["catalog"]), "--state", str(paths["state"])]


def assert_one_line(code, lines):
    assert code != 0
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert len([line for line in lines if line.startswith("tap-postgres: error:")]) == 1, "\n".join(lines)


@pytest.mark.parametrize("which", ["config", "catalog", "state"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_an_error_the_tap_reports(which, case, tmp_path):
    path = tmp_path / f"{which}.json"
    path.write_bytes(HOSTILE[case])
    # a TapPostgresError is one line from the CLI; a 5,000-digit number is a valid state value
    with contextlib.suppress(TapPostgresError):
        read_as_the_tap_does(which, str(path))


@pytest.mark.parametrize(
    ("which", "case"),
    [("config", "not UTF-8"), ("catalog", "nested 100,000 deep"), ("state", "an integer of 5,000 digits")],
)
def test_a_hostile_file_is_one_line_from_the_cli(which, case, tmp_path):
    code, lines = run_cli(*arguments(tmp_path, which, HOSTILE[case]))
    assert_one_line(code, lines)


@pytest.mark.parametrize("which", ["config", "catalog", "state"])
def test_a_fifo_or_a_device_is_refused_without_blocking(which, tmp_path):
    args = arguments(tmp_path, which, b"{}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args[args.index(str(tmp_path / f"{which}.json"))] = str(fifo)
    started = time.monotonic()
    code, lines = run_cli(*args)
    assert_one_line(code, lines)
    assert "is not a regular file (a FIFO)" in lines[-1]
    assert time.monotonic() - started < 5
    args[args.index(str(fifo))] = "/dev/zero"
    code, lines = run_cli(*args)
    assert "is not a regular file (a device)" in lines[-1]


FILE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    ).map(lambda value: json.dumps(value).encode()),
    st.tuples(st.sampled_from(list(HOSTILE.values())), st.integers(0, 100)).map(lambda pair: pair[0][: pair[1]]),
)


@pytest.mark.parametrize("which", ["config", "catalog", "state"])
@fuzz_settings({"files": 100}, "files")
@given(content=FILE_BYTES)
def test_any_bytes_in_any_file_are_an_error_the_tap_reports_in_one_line(which, content, tmp_path_factory):
    # in process, for speed: every failure must be a TapPostgresError, which the CLI prints as one line
    path = tmp_path_factory.mktemp("fuzz") / f"{which}.json"
    path.write_bytes(content)
    try:
        read_as_the_tap_does(which, str(path))
    except TapPostgresError:
        pass


def test_the_polled_state_skips_what_it_cannot_read_once_and_parses_only_changes(tmp_path, caplog):
    path = tmp_path / "state.json"
    polled = files.PolledJsonFile(str(path), "state")
    assert polled.read() is None  # not there yet
    path.write_text('{"bookmarks": {}}')
    first = polled.read()
    assert first == {"bookmarks": {}}
    assert polled.read() is first  # unchanged: not parsed again
    path.write_text('{"bookmarks": {"a": {}}}')
    assert polled.read() == {"bookmarks": {"a": {}}}
    path.write_text('{"bookmarks": ')  # being rewritten: tells nothing, says nothing
    assert polled.read() is None
    path.unlink()
    os.mkfifo(path)
    started = time.monotonic()
    assert [polled.read() for _ in range(3)] == [None, None, None]
    assert time.monotonic() - started < 1
    path.unlink()
    path.symlink_to("/dev/zero")
    assert polled.read() is None
    path.unlink()
    with open(path, "wb") as big:
        big.truncate(files.MAX_BYTES["state"] + 1)  # sparse: over the bound without the disk
    assert [polled.read(), polled.read()] == [None, None]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "(a FIFO)" in warnings[0] and "(a device)" in warnings[1] and "over the 64 MiB" in warnings[2]


def test_a_fifo_in_place_of_the_polled_state_file_does_not_outlive_max_run_seconds(db, tmp_path):
    """The reported hang: the state path replaced by a FIFO blocked the tap in open() for minutes."""
    from conftest import select_all

    db.execute("DROP TABLE IF EXISTS polled; CREATE TABLE polled (id int PRIMARY KEY)")
    db.create_slot()
    catalog = select_all(db.discover(), "LOG_BASED", only={"public-polled"})
    config = dict(db.config, max_run_seconds=3, state_poll_seconds=1, break_at_end_lsn=False)
    first = db.run_tap("--catalog", str(db.write_json("catalog.json", catalog)), config=config)[0]
    state = [json.loads(line) for line in first if '"type":"STATE"' in line.replace(" ", "")][-1]["value"]
    state_path = db.write_json("state.json", state)
    args = [*TAP, "--config", str(db.write_json("config.json", config)), "--catalog", str(tmp_path / "c.json")]
    (tmp_path / "c.json").write_text(json.dumps(catalog))
    process = subprocess.Popen([*args, "--state", str(state_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)  # the tap has read the state and streams
    state_path.unlink()
    os.mkfifo(state_path)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert time.monotonic() - started < 10
    assert "is not a regular file (a FIFO)" in stderr.decode()
