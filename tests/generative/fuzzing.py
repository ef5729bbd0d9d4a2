"""How the hypothesis suites run: bounded and derandomized in `make test`, long and seeded in `make fuzz`.

`make test` runs a fixed number of examples per test, derandomized, so CI sees the same examples
every time. `make fuzz` sets TAP_FUZZ_EXAMPLES, the number of examples a module's tests share, and
TAP_FUZZ_SEED (empty: a random seed, printed so the run can be repeated).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis.internal.conjecture import engine as hypothesis_engine

FUZZ_EXAMPLES = int(os.environ.get("TAP_FUZZ_EXAMPLES") or 0)
if FUZZ_EXAMPLES:
    SEED: int | None = int(os.environ["TAP_FUZZ_SEED"]) if os.environ.get("TAP_FUZZ_SEED") else random.randrange(2**32)
else:
    SEED = None


def quiet_settings(examples: int, derandomize: bool, **extra) -> settings:
    """Return settings of `examples` examples with no deadline, no example database and no health checks."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        **extra,
    )


def fuzz_settings(bounded: dict[str, int], name: str, examples: int | None = None):
    """Return the settings decorator of one test: `examples` (else `bounded[name]`) in the bounded run;
    under make fuzz, the tests named in `bounded` share TAP_FUZZ_EXAMPLES and the others keep theirs."""

    def decorate(test):
        count = bounded[name] if examples is None else examples
        if FUZZ_EXAMPLES and name in bounded:
            count = max(1, FUZZ_EXAMPLES // len(bounded))
        configured = quiet_settings(count, derandomize=SEED is None)(test)
        return seed(SEED)(configured) if SEED is not None else configured

    return decorate


@contextlib.contextmanager
def shrinking_capped(seconds: float) -> Iterator[None]:
    """Cap the time hypothesis spends shrinking a failure in the bounded run (an internal of hypothesis,
    set only around the test): make test stays within its time while a bug is open."""
    with pytest.MonkeyPatch.context() as patch:
        if not FUZZ_EXAMPLES and hasattr(hypothesis_engine, "MAX_SHRINKING_SECONDS"):
            patch.setattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", seconds)
        yield
