"""Helpers of the STATE fuzzer (tests/test_state_fuzz.py): the fixed tables, the STATE strategies, the contract."""
