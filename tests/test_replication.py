"""Slot names, LSN bookmarks and copy snapshots: the pieces of LOG_BASED that need no server."""

from __future__ import annotations

import pytest

from tap_postgres.config import parse_config
from tap_postgres.errors import StateError
from tap_postgres.replication import slot_names
from tap_postgres.state import bookmark_lsn, int_to_lsn, lsn_to_int
from tap_postgres.sync.logical import CopySnapshot


def test_slot_names_follow_pipelinewise_dbname_first_then_tap_id():
    config = parse_config({"host": "h", "user": "u", "dbname": "App-DB", "tap_id": "My.Pipe"})
    assert slot_names(config) == ["pipelinewise_app_db", "pipelinewise_app_db_my_pipe"]


def test_lsn_text_and_int_convert_both_ways():
    assert lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert int_to_lsn(lsn_to_int("0/1517DF8")) == "0/1517DF8"


@pytest.mark.parametrize(("value", "expected"), [(24109528, 24109528), ("0/16FE0D8", 0x16FE0D8), (None, None)])
def test_lsn_bookmark_reads_pipelinewise_ints_and_lsn_text(value, expected):
    state = {"bookmarks": {"public-t": {"lsn": value}}}
    assert bookmark_lsn(state, "public-t") == expected


def test_malformed_lsn_bookmark_is_a_state_error():
    with pytest.raises(StateError, match='public-t: the state.s "lsn" is "yesterday", not a WAL position'):
        bookmark_lsn({"bookmarks": {"public-t": {"lsn": "yesterday"}}}, "public-t")


def test_copy_snapshot_saw_committed_transactions_before_it_only():
    snapshot = CopySnapshot.parse("100:105:101,103", lsn=0)
    assert snapshot.saw(99) and snapshot.saw(102) and snapshot.saw(104)
    assert not snapshot.saw(101) and not snapshot.saw(103) and not snapshot.saw(105)


def test_copy_snapshot_gives_32_bit_xids_the_snapshot_epoch():
    epoch = 3 << 32
    snapshot = CopySnapshot.parse(f"{epoch + 10}:{epoch + 20}:", lsn=0)
    assert snapshot.saw(5)  # epoch + 5, before xmin
    assert not snapshot.saw(25)  # after xmax
    wrapped = CopySnapshot.parse(f"{epoch - 10}:{epoch + 5}:", lsn=0)
    assert wrapped.saw(0xFFFFFFF0)  # the previous epoch, before xmin
    assert not wrapped.saw(6)


def test_copy_snapshot_round_trips_through_its_bookmark_form():
    snapshot = CopySnapshot.parse("100:105:103,101", lsn=4096)
    assert CopySnapshot.from_bookmark("public-t", snapshot.to_bookmark()) == snapshot


@pytest.mark.parametrize("saved", ["100:105:", {"snapshot": "100:105"}, {"snapshot": "a:b:", "lsn": 1}, {"lsn": 5}])
def test_malformed_copy_snapshot_is_a_state_error(saved):
    with pytest.raises(StateError, match="copy_snapshot"):
        CopySnapshot.from_bookmark("public-t", saved)
