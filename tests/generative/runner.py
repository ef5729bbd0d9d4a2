"""Runs the real CLI in-process (its stdout and stderr redirected at the descriptor level) and reads its output.

`tap_postgres.cli.main` is the console script's own entry point, so an in-process run is the code
path of `tap-postgres --config ... --catalog ...` without a half-second interpreter start per run.
"""

from __future__ import annotations

import dataclasses
import decimal
import gc
import json
import logging
import os
import re
import signal
import sys
import traceback
from decimal import Decimal
from pathlib import Path

import jsonschema

from tap_postgres.cli import main as tap_main

_DECODER = json.JSONDecoder()
# No run of a handful of rows takes long; a run that does is stuck (it is reported, not waited for).
RUN_SECONDS = 15


class TapTimeout(BaseException):
    """Raised in a run that outlived RUN_SECONDS: a BaseException, so no `except Exception` of the tap eats it."""


def _timed_out(signum, frame):
    raise TapTimeout(f"the tap run did not end within {RUN_SECONDS} s")


@dataclasses.dataclass
class Run:
    """One tap run: its output lines, stderr and exit status (`crash` holds an escaped exception)."""

    lines: list[str]
    stderr: str
    code: int
    crash: str = ""

    @property
    def failed(self) -> bool:
        return self.code != 0 or bool(self.crash)

    def messages(self, parse_float=Decimal) -> list[dict]:
        return [json.loads(line, parse_float=parse_float) for line in self.lines]

    def last_state(self) -> str | None:
        """The raw JSON text of the last STATE's value (raw, so numeric bookmarks stay exact)."""
        states = [line for line in self.lines if line.startswith('{"type":"STATE"')]
        return dict(members(states[-1])[0])["value"] if states else None

    def record_lines(self, stream: str) -> list[str]:
        return [line for line in self.lines if line.startswith('{"type":"RECORD"') and _stream_of(line) == stream]

    def failure(self) -> str:
        """The reason the run failed, for an assertion message."""
        if self.crash:
            # the innermost frames and the error: where in the tap it broke
            lines = self.crash.strip().splitlines()
            start = max((i for i, line in enumerate(lines) if "tap_postgres/" in line), default=0)
            start = max((i for i, line in enumerate(lines[:start]) if "tap_postgres/" in line), default=start)
            return "\n".join(lines[start:])
        return f"exit code {self.code}: " + "\n".join(self.stderr.strip().splitlines()[-15:])

    def failure_kind(self) -> str:
        """A short, stable name of why it failed: the exception type, or the error line's cause."""
        if self.crash:
            if "TapTimeout" in self.crash:
                return "TapTimeout"
            names = re.findall(
                r"^((?:[a-z_]\w*\.)+[A-Z]\w*|[A-Z]\w*(?:Error|Exception|Warning)):", self.crash, re.MULTILINE
            )
            return names[-1] if names else self.crash.strip().splitlines()[-1][:60]
        start = self.stderr.rfind("tap-postgres: error:")
        if start < 0:
            return f"exit {self.code}"
        return error_kind(self.stderr[start + len("tap-postgres: error:") :])


def error_kind(cause: str) -> str:
    """The words of an error's cause without the names and values in it, which vary from example to example.

    The tap quotes names as they are: a quoted name may hold quotes, backslashes and line breaks (the
    error then runs over several lines), so a quoted part is cut out with whatever sticks to it, and
    a quote left over ends the words.
    """
    cause = re.sub(r'"[^"]*"', "…", cause)  # [^"] spans line breaks
    cause = re.sub(r"'[^']*'|\d+", "…", cause)
    cause = re.split(r"[\"']", cause)[0]
    cause = re.sub(r"\S*…\S*", "…", cause)
    return " ".join(cause.split())[:80]


def _stream_of(line: str) -> str:
    return json.loads(line)["stream"]


def run_tap(tmp_dir: Path, config: dict, catalog: dict | None = None, state: str | None = None, *, discover=False):
    """Run tap-postgres in this process (`state`: the raw JSON of a STATE value); return a Run."""
    config_path = tmp_dir / "config.json"
    config_path.write_text(json.dumps(config))
    argv = ["--config", str(config_path)]
    if discover:
        argv.append("--discover")
    if catalog is not None:
        (tmp_dir / "catalog.json").write_text(json.dumps(catalog))
        argv += ["--catalog", str(tmp_dir / "catalog.json")]
    if state is not None:
        (tmp_dir / "state.json").write_text(state)
        argv += ["--state", str(tmp_dir / "state.json")]
    out_path, err_path = tmp_dir / "stdout", tmp_dir / "stderr"
    handlers = _logging_handlers()
    tap_logger = logging.getLogger("tap-postgres")
    propagate, tap_logger.propagate = tap_logger.propagate, False  # keep its lines out of pytest's log capture
    sys.stdout.flush()
    sys.stderr.flush()
    saved_streams = sys.stdout, sys.stderr
    saved_out, saved_err = os.dup(1), os.dup(2)
    code, crash = 0, ""
    with open(out_path, "w") as out, open(err_path, "w") as err:
        # both levels: the tap writes to sys.stdout.fileno() (under pytest not 1) and libraries to fd 1 and 2
        sys.stdout, sys.stderr = out, err
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        previous = signal.signal(signal.SIGALRM, _timed_out)
        signal.alarm(RUN_SECONDS)
        try:
            tap_main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - an escaped exception is the finding
            crash = traceback.format_exc()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            _restore_logging_handlers(handlers)
            tap_logger.propagate = propagate
    if crash:
        gc.collect()  # the traceback held the crashed run's connections: close them now
    # split at newlines only: str.splitlines would also split inside JSON strings at U+2028, U+0085, ...
    lines = [line for line in out_path.read_text().split("\n") if line]
    return Run(lines, err_path.read_text(errors="replace"), code, crash)


def _logging_handlers() -> dict:
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    return {logger: list(logger.handlers) for logger in loggers}


def _restore_logging_handlers(saved: dict) -> None:
    """Each in-process run configures logging again: drop the handlers it added (they write to fd 2)."""
    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]:
        logger.handlers[:] = saved.get(logger, [])


# ------------------------------------------------------------------------------------------ raw JSON


def members(text: str, start: int = 0) -> tuple[list[tuple[str, str]], int]:
    """Return the (name, raw JSON text) members of the object at `start` and the index after it."""
    assert text[start] == "{", text[start : start + 40]
    pairs, index = [], start + 1
    if text[index] == "}":
        return pairs, index + 1
    while True:
        name, index = json.decoder.scanstring(text, text.index('"', index) + 1)
        index = text.index(":", index) + 1
        _, end = _DECODER.raw_decode(text, index)
        pairs.append((name, text[index:end]))
        index = end
        if text[index] == "}":
            return pairs, index + 1
        assert text[index] == ",", text[index : index + 40]
        index += 1


def record_members(line: str) -> list[tuple[str, str]]:
    """Return the record's (column, raw JSON text of its value) pairs of a RECORD line, in order."""
    for name, raw in members(line)[0]:
        if name == "record":
            return members(raw)[0]
    raise AssertionError(f"no record in {line[:200]}")


# ------------------------------------------------------------------------------------------ schemas

DRAFTS = {"draft4": jsonschema.Draft4Validator, "draft2020-12": jsonschema.Draft202012Validator}


@dataclasses.dataclass
class Problem:
    """A finding: `kind` names it for hypothesis (one bug per kind), `detail` explains it."""

    kind: str
    detail: str


_DEFECTS: dict[str, type] = {}


def gravest_first(problems: list[Problem], severity: tuple[str, ...], unranked: int) -> list[Problem]:
    """One problem of each kind, the gravest first: ranked by the first `severity` prefix its kind has
    (`unranked` for a kind with none)."""
    by_kind: dict[str, Problem] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, problem)
    return sorted(
        by_kind.values(),
        key=lambda p: next((i for i, prefix in enumerate(severity) if p.kind.startswith(prefix)), unranked),
    )


def defect(kind: str) -> type:
    """The exception class of one kind of problem: hypothesis shrinks each kind apart."""
    return _DEFECTS.setdefault(kind, type(re.sub(r"\W+", "_", kind)[:100], (AssertionError,), {}))


def check_schema(schema: dict) -> list[Problem]:
    """check_schema under both drafts, the schema parsed with float and with Decimal numbers."""
    problems = []
    for draft, validator in DRAFTS.items():
        try:
            validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(Problem(f"schema invalid under {draft}: {exc.validator}", _error_text(exc)))
    return problems


def validate_record(validators: dict, record: dict, column_types: dict[str, str]) -> list[Problem]:
    """Validate a record with each (draft, number parsing) validator; a crash of a validator is a problem too."""
    problems = []
    for (draft, parsing), validator in validators.items():
        try:
            errors = list(validator.iter_errors(record))
        except (decimal.DecimalException, TypeError, ValueError, OverflowError) as exc:
            problems.append(
                Problem(
                    f"validator crashed under {draft} with {parsing} numbers: {type(exc).__name__}",
                    f"{type(exc).__name__}: {exc} validating {record!r}",
                )
            )
            continue
        for error in errors:
            column = next((str(part) for part in error.absolute_path), "")
            # the keyword's place in the column's schema (type, items/type, maximum...) names the kind
            where = "/".join(str(part) for part in list(error.absolute_schema_path)[2:])
            problems.append(
                Problem(
                    f"record invalid: {where or error.validator}",
                    f"under {draft} ({parsing} numbers), column {column!r} "
                    f"({column_types.get(column, '?')}): {_error_text(error)}",
                )
            )
    return problems


def _error_text(error: jsonschema.ValidationError) -> str:
    return f"{error.message} (schema path {list(error.absolute_schema_path)})"


def validators_of(schema_line: str) -> dict:
    """Validators of a SCHEMA line's schema under both drafts, its numbers parsed as float and as Decimal."""
    result = {}
    for parsing, parse_float in (("float", float), ("Decimal", Decimal)):
        schema = json.loads(schema_line, parse_float=parse_float)["schema"]
        for draft, validator in DRAFTS.items():
            result[(draft, parsing)] = validator(schema)
    return result
