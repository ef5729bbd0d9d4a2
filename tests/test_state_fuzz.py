"""STATE fuzzer: random and hostile STATE files through FULL_TABLE, INCREMENTAL and LOG_BASED syncs.

A STATE file is written by the tap, saved by a target, and sometimes edited by hand or carried over
from pipelinewise. Whatever it holds, each run on it ends in exactly one of:

1. a correct run: exit 0; every RECORD validates against its stream's SCHEMA (draft 4 and 2020-12)
   and equals a row of the table (compared with the database); INCREMENTAL, given a bookmark that
   is a valid value of the key's type, emits every row whose key is >= it; the last STATE holds an
   int `version` (0 <= version < 2**63) per synced stream and, for LOG_BASED, an int `lsn` no later
   than the server's WAL end;
2. a refusal: a non-zero exit, no `Traceback` on stderr, and stderr's last line is the one line
   `tap-postgres: error: <cause>: <fix>`.

Never a traceback, and never a moved slot: after a refusal the slot's confirmed_flush_lsn is
unchanged; after any run it is not past pg_current_wal_lsn() as of before the run, nor past the
lowest `lsn` the input STATE held for the LOG_BASED streams (when all of those were valid).

The tables are fixed (statefuzz/tables.py); the states come from statefuzz/strategies.py and the
checks from statefuzz/contract.py. The tap runs in-process through the generative suite's runner.
A failure prints the method, the streams, the state file and the stderr (or traceback), and
hypothesis reports each kind of failure apart, each shrunk to a small state.

`make test` runs a bounded, derandomized number of examples; `make fuzz EXAMPLES=N SEED=S` sets
TAP_FUZZ_EXAMPLES (shared by the tests) and TAP_FUZZ_SEED (empty: random, printed).
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from generative.fuzzing import fuzz_settings, shrinking_capped
from generative.runner import Problem, Run, defect, gravest_first, run_tap
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from statefuzz import contract
from statefuzz.contract import Selected
from statefuzz.strategies import Live, malformed_files, malformed_states, resolve, states, to_json
from statefuzz.tables import LOG_BASED_STREAMS, SETUP_SQL, TABLES

BOUNDED_EXAMPLES = {"full_table": 120, "incremental": 120, "log_based": 80, "mixed": 50, "malformed": 50}
# hypothesis shrinks a failure for up to five minutes; make test stays within its time while bugs are open
BOUNDED_SHRINK_SECONDS = 5

LOG_BASED_CONFIG = {"logical_poll_total_seconds": 2, "break_at_end_lsn": True}
ITERSIZES = st.sampled_from([20000, 1, 2, 3])


def fuzzed(name: str):
    """Hypothesis settings of one test: bounded and derandomized by default, long and seeded under make fuzz."""
    return fuzz_settings(BOUNDED_EXAMPLES, name)


@pytest.fixture(autouse=True)
def bounded_shrinking():
    """Cap the time spent shrinking in the bounded run."""
    with shrinking_capped(BOUNDED_SHRINK_SECONDS):
        yield


# ------------------------------------------------------------------------------------- the database


class Fuzz:
    """The module's database: the fixed tables, the wal2json slot and the discovered catalog."""

    def __init__(self, db):
        self.db = db
        db.execute(SETUP_SQL)
        self.slot = db.create_slot()
        discovered = run_tap(db.tmp_dir, db.config, discover=True)
        assert not discovered.failed, discovered.failure()
        self.catalog = json.loads("\n".join(discovered.lines))
        self.next_event = 1000

    def catalog_of(self, selected: list[Selected]) -> dict:
        """The discovered catalog with only `selected` selected, each with its method and key."""
        streams = []
        for chosen in selected:
            stream = copy.deepcopy(next(s for s in self.catalog["streams"] if s["tap_stream_id"] == chosen.stream))
            table_metadata = next(item["metadata"] for item in stream["metadata"] if item["breadcrumb"] == [])
            table_metadata.update({"selected": True, "replication-method": chosen.method})
            if chosen.replication_key:
                assert chosen.replication_key in table_metadata["valid-replication-keys"]
                table_metadata["replication-key"] = chosen.replication_key
            streams.append(stream)
        return {"streams": streams}

    def add_event(self) -> None:
        """Insert a row into the LOG_BASED table, so the WAL pass has a change to emit."""
        self.next_event += 1
        self.db.execute("INSERT INTO log_events VALUES (%s, %s)", (self.next_event, f"change {self.next_event}"))

    def live_values(self) -> dict:
        """The server's values a Live placeholder stands for, read just before the run."""
        position = contract.slot_position(self.db.conn, self.slot)
        (xmin, snapshot), *_ = self.db.query(
            "SELECT txid_snapshot_xmin(txid_current_snapshot()), pg_current_snapshot()::text"
        )
        live = {"slot": position.confirmed_flush, "wal": position.wal, "xmin": xmin, "snapshot": snapshot}
        return live | {"origin": contract.origin_of(self.db.conn, self.slot)}


@pytest.fixture(scope="module")
def fuzz(db):
    return Fuzz(db)


# ------------------------------------------------------------------------------------- one example


def sync_and_check(
    fuzz: Fuzz, selected: list[Selected], state, itersize: int, raw_text: str | None = None, change: bool = True
) -> None:
    """Run the tap on `state` (or on the file text `raw_text`) and raise if the run broke the contract.

    With `change`, a LOG_BASED run has a row inserted just before it to stream.
    """
    log_based = [chosen.stream for chosen in selected if chosen.method == "LOG_BASED"]
    if log_based and change:
        fuzz.add_event()
    if not contract.wait_until_idle(fuzz.db.conn, fuzz.slot):
        contract.release(fuzz.db.conn, fuzz.slot)
    live = fuzz.live_values()
    state = resolve(state, live) if raw_text is None else None
    text = raw_text if raw_text is not None else to_json(state)
    config = {**fuzz.db.config, "itersize": itersize, **(LOG_BASED_CONFIG if log_based else {})}
    before = contract.SlotPosition(live["slot"], live["wal"])

    run = run_tap(fuzz.db.tmp_dir, config, fuzz.catalog_of(selected), text)

    problems = contract.crash_problems(run)
    if not contract.wait_until_idle(fuzz.db.conn, fuzz.slot):
        if not run.crash:
            problems.append(Problem("the slot is still in use 5 s after the run", ""))
        contract.release(fuzz.db.conn, fuzz.slot)
    after = contract.slot_position(fuzz.db.conn, fuzz.slot)
    if run.failed:
        problems += [] if run.crash else contract.refusal_problems(run)
    else:
        problems += contract.correct_run_problems(run, fuzz.db.conn, selected, state, after.wal)
        problems += contract.foreign_origin_problems(fuzz.db.conn, selected, state, fuzz.slot)
    problems += contract.slot_problems(run, state, log_based, before, after)
    if currently_in_test_context():
        event(outcome(run))
    fail(problems, selected, text, itersize, run)


def outcome(run) -> str:
    """What a run ended in, for hypothesis's statistics (pytest --hypothesis-show-statistics)."""
    if run.crash:
        return "traceback"
    if run.code == 0:
        return "correct run"
    cause = run.stderr.rstrip().rsplit("\n", 1)[-1].removeprefix(contract.ERROR_PREFIX)
    cause = re.sub(r"^\s*public-\w+: |/tmp/\S+", "", cause)  # the stream and file names vary; the cause does not
    return "refusal: " + re.sub(r"\d+", "…", cause).strip()[:70]


# a traceback hides what follows it; a refusal in the wrong form, then a moved slot, then the rest
_SEVERITY = ("traceback", "exit", "more than one error line", "a refused run moved the slot", "the slot")


def fail(problems: list[Problem], selected: list[Selected], text: str, itersize: int, run) -> None:
    """Raise the gravest problem as an exception class of its own kind, so hypothesis shrinks each kind apart.

    The message holds what reproduces the run: the streams, the state file, itersize and stderr.
    """
    if not problems:
        return
    ranked = gravest_first(problems, _SEVERITY, unranked=len(_SEVERITY))
    first = ranked[0]
    streams = ", ".join(
        f"{s.stream} {s.method}" + (f" on {s.replication_key}" if s.replication_key else "") for s in selected
    )
    others = "".join(f"\n  also {p.kind}: {p.detail[:300]}" for p in ranked[1:6])
    stderr_tail = "\n".join(run.stderr.rstrip().splitlines()[-6:])
    raise defect(first.kind)(
        f"{first.kind}\n{first.detail}{others}\n"
        f"streams: {streams}; itersize {itersize}; {'crashed' if run.crash else f'exit {run.code}'}\n"
        f"state file:\n{text}\n"
        f"stderr (last lines):\n{stderr_tail}"
    )


# ------------------------------------------------------------------------------------- the tests

INCREMENTAL_CHOICES = [(stream, key) for stream in sorted(TABLES) for key in TABLES[stream].replication_keys]


def streams_with(method: str, pool: list[str]):
    """One to three streams of `pool`, all synced with `method`."""
    return st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True).map(
        lambda streams: [Selected(stream, method) for stream in streams]
    )


incremental_streams = st.lists(
    st.sampled_from(INCREMENTAL_CHOICES), min_size=1, max_size=3, unique_by=lambda choice: choice[0]
).map(lambda choices: [Selected(stream, "INCREMENTAL", key) for stream, key in choices])


def state_for(data, selected: list[Selected]):
    """Draw a state for the selected streams."""
    return data.draw(states({s.stream: (s.method, s.replication_key) for s in selected}), label="state")


@fuzzed("full_table")
@given(selected=streams_with("FULL_TABLE", sorted(TABLES)), itersize=ITERSIZES, data=st.data())
def test_full_table_runs_correctly_or_refuses_in_one_line_whatever_the_state(fuzz, selected, itersize, data):
    sync_and_check(fuzz, selected, state_for(data, selected), itersize)


@fuzzed("incremental")
@given(selected=incremental_streams, itersize=ITERSIZES, data=st.data())
def test_incremental_emits_every_row_from_a_valid_bookmark_or_refuses_in_one_line(fuzz, selected, itersize, data):
    sync_and_check(fuzz, selected, state_for(data, selected), itersize)


@fuzzed("log_based")
@given(
    selected=streams_with("LOG_BASED", list(LOG_BASED_STREAMS)),
    itersize=ITERSIZES,
    change=st.booleans(),
    data=st.data(),
)
def test_log_based_never_moves_the_slot_past_the_state_and_refuses_in_one_line(fuzz, selected, itersize, change, data):
    sync_and_check(fuzz, selected, state_for(data, selected), itersize, change=change)


@st.composite
def mixed_streams(draw):
    """Up to four streams, each with a method of its own (LOG_BASED only where the table is a LOG_BASED one)."""
    streams = draw(st.lists(st.sampled_from(sorted(TABLES)), min_size=2, max_size=4, unique=True))
    selected = []
    for stream in streams:
        methods = ["FULL_TABLE", "INCREMENTAL"] + (["LOG_BASED"] if stream in LOG_BASED_STREAMS else [])
        method = draw(st.sampled_from(methods))
        key = draw(st.sampled_from(TABLES[stream].replication_keys)) if method == "INCREMENTAL" else None
        selected.append(Selected(stream, method, key))
    return selected


@fuzzed("mixed")
@given(selected=mixed_streams(), itersize=ITERSIZES, data=st.data())
def test_streams_of_every_method_in_one_run_run_correctly_or_refuse_in_one_line(fuzz, selected, itersize, data):
    sync_and_check(fuzz, selected, state_for(data, selected), itersize)


MIXED = [
    Selected("public-int_keyed", "FULL_TABLE"),
    Selected("public-text_keyed", "INCREMENTAL", "code"),
    Selected("public-log_events", "LOG_BASED"),
]


@fuzzed("malformed")
@given(state=malformed_states, raw_text=st.none() | malformed_files)
def test_a_state_file_of_the_wrong_shape_is_read_correctly_or_refused_in_one_line(fuzz, state, raw_text):
    sync_and_check(fuzz, MIXED, state, 20000, raw_text)


# States the fuzzer found breaking the tap, kept as plain examples: each must give a correct run or a refusal.
FULL = "FULL_TABLE"
KNOWN_STATES = {
    "resume_key shorter than the composite key": (
        [Selected("public-composite_keyed", FULL)],
        {"bookmarks": {"public-composite_keyed": {"resume_key": ["10% off"]}}},
    ),
    "resume_key not a list": (
        [Selected("public-composite_keyed", FULL)],
        {"bookmarks": {"public-composite_keyed": {"resume_key": True}}},
    ),
    "resume_key a boolean for a timestamp key": (
        [Selected("public-ts_keyed", FULL)],
        {"bookmarks": {"public-ts_keyed": {"version": 1, "resume_key": [True]}}},
    ),
    "resume_key text for an int key": (
        [Selected("public-int_keyed", FULL)],
        {"bookmarks": {"public-int_keyed": {"version": 1, "resume_key": ["abc"], "snapshot_xmin": Live("xmin")}}},
    ),
    "version a float": (
        [Selected("public-composite_keyed", FULL)],
        {"bookmarks": {"public-composite_keyed": {"version": -0.0, "resume_key": None}}},
    ),
    "version a list": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": [], "last_replication_method": "LOG_BASED", "lsn": 0}}},
    ),
    "version true": (
        [Selected("public-composite_keyed", "INCREMENTAL", "n")],
        {
            "bookmarks": {
                "public-composite_keyed": {"version": True, "replication_key": "n", "replication_key_value": 1}
            }
        },
    ),
    "replication_key_value an object": (
        [Selected("public-int_keyed", "INCREMENTAL", "id")],
        {"bookmarks": {"public-int_keyed": {"version": 1, "replication_key": "id", "replication_key_value": {"v": 3}}}},
    ),
    "replication_key_value no date": (
        [Selected("public-ts_keyed", "INCREMENTAL", "ts")],
        {
            "bookmarks": {
                "public-ts_keyed": {"version": 1, "replication_key": "ts", "replication_key_value": "2020-13-45"}
            }
        },
    ),
    "replication_key_value with a percent sign": (
        [Selected("public-text_keyed", "INCREMENTAL", "code")],
        {
            "bookmarks": {
                "public-text_keyed": {"version": 1, "replication_key": "code", "replication_key_value": "10% off"}
            }
        },
    ),
    "replication_key naming another column": (
        [Selected("public-int_keyed", "INCREMENTAL", "id")],
        {"bookmarks": {"public-int_keyed": {"version": 1, "replication_key": "name", "replication_key_value": "one"}}},
    ),
    "lsn 2**64": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "last_replication_method": "LOG_BASED", "lsn": 2**64}}},
    ),
    "lsn as X/Y text, at the WAL end": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "lsn": Live("wal", 0, "text")}}},
    ),
    "lsn beyond the WAL end": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "lsn": Live("wal", 2**40)}}},
    ),
    "lsn a float": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "lsn": Live("slot", 0, "float")}}},
    ),
    "resume_key holding a NUL character": (
        [Selected("public-text_keyed", FULL)],
        {"bookmarks": {"public-text_keyed": {"version": 1, "resume_key": ["\x00"]}}},
    ),
    "replication_key_value holding a NUL character": (
        [Selected("public-text_keyed", "INCREMENTAL", "code")],
        {
            "bookmarks": {
                "public-text_keyed": {"version": 1, "replication_key": "code", "replication_key_value": "\x00"}
            }
        },
    ),
    "lsn null": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "last_replication_method": "LOG_BASED", "lsn": None}}},
    ),
    "no version beside the lsn": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"last_replication_method": "LOG_BASED", "lsn": Live("slot")}}},
    ),
    "copy_snapshot with a null snapshot": (
        [Selected("public-log_events", "LOG_BASED")],
        {
            "bookmarks": {
                "public-log_events": {
                    "version": 1,
                    "lsn": Live("slot"),
                    "copy_snapshot": {"snapshot": None, "lsn": Live("slot")},
                }
            }
        },
    ),
    "resume_key an int during a LOG_BASED copy": (
        [Selected("public-log_events", "LOG_BASED")],
        {"bookmarks": {"public-log_events": {"version": 1, "lsn": Live("slot"), "resume_key": 1}}},
    ),
    "copy_snapshot malformed": (
        [Selected("public-log_events", "LOG_BASED")],
        {
            "bookmarks": {
                "public-log_events": {"version": 1, "lsn": Live("slot"), "copy_snapshot": {"snapshot": "a:b:c"}}
            }
        },
    ),
    "two LOG_BASED streams, one lsn behind the slot": (
        [Selected("public-log_events", "LOG_BASED"), Selected("public-int_keyed", "LOG_BASED")],
        {
            "bookmarks": {
                "public-log_events": {"version": 1, "lsn": 0},
                "public-int_keyed": {"version": 1, "lsn": Live("wal")},
            }
        },
    ),
    "a STATE message saved whole, syncing an unknown stream": (
        MIXED,
        {
            "type": "STATE",
            "value": {"currently_syncing": "public-missing", "bookmarks": {"public-missing": {"lsn": "x"}}},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(KNOWN_STATES))
def test_states_the_fuzzer_found_give_a_correct_run_or_a_refusal(fuzz, case):
    selected, state = KNOWN_STATES[case]
    sync_and_check(fuzz, selected, state, itersize=2)


def test_the_contract_tells_a_one_line_refusal_from_a_traceback_or_a_bare_exit():
    refusal = Run([], 'INFO starting\ntap-postgres: error: public-x: the state\'s "lsn" is -1: fix it\n', 1)
    assert contract.crash_problems(refusal) == contract.refusal_problems(refusal) == []
    logged = Run([], "Traceback (most recent call last):\n  ...\nKeyError: 'lsn'\ntap-postgres: error: lsn\n", 1)
    assert contract.crash_problems(logged)
    assert contract.refusal_problems(Run([], "tap-postgres: error: two\nlines\n", 1))
    assert contract.refusal_problems(Run([], "", 2))


def test_the_slot_may_move_up_to_the_lowest_valid_lsn_of_the_state_only():
    before = contract.SlotPosition(confirmed_flush=100, wal=500)
    state = {"bookmarks": {"a": {"lsn": 300}, "b": {"lsn": "0/C8", "last_replication_method": "LOG_BASED"}}}
    assert contract.slot_bound(state, ["a", "b"], before) == 200
    assert contract.slot_bound({"type": "STATE", "value": state}, ["a"], before) == 300
    assert contract.slot_bound({"bookmarks": {"a": {"lsn": 50}}}, ["a"], before) == 100  # the slot is past it
    assert (
        contract.slot_bound({"bookmarks": {"a": {"lsn": 300, "last_replication_method": "FULL_TABLE"}}}, ["a"], before)
        == 100
    )
    assert contract.slot_bound({"bookmarks": {"a": {"lsn": 900}}}, ["a"], before) == 500  # invalid: the WAL end only
    refused = Run([], "tap-postgres: error: no\n", 1)
    assert contract.slot_problems(refused, state, ["a"], before, contract.SlotPosition(150, 600))
    assert not contract.slot_problems(Run([], "", 0), state, ["a", "b"], before, contract.SlotPosition(200, 600))


def test_the_live_placeholders_resolve_to_the_server_values(fuzz):
    """The strategies' WAL positions and xids are the server's when the example runs."""
    live = fuzz.live_values()
    state = resolve({"lsn": Live("slot", 1), "text": Live("wal", 0, "text"), "xmin": Live("xmin")}, live)
    assert state["lsn"] == live["slot"] + 1
    assert state["text"] == contract.lsn_text(live["wal"])
    assert state["xmin"] == live["xmin"]
