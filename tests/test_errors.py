"""A secret setting's value is hidden in every message where it stands as a token, and nowhere else."""

from __future__ import annotations

import logging
import re
from unittest import mock
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tap_postgres import errors

WORD = re.compile(r"\w")  # a letter, a digit or an underscore
MARK = "\x00"  # what the tests see in place of "<password hidden>": no secret holds it


def redacted(secret: str, text: str) -> str:
    with mock.patch.dict(errors._SECRETS, clear=True):
        errors.keep_secret("password", secret)
        return errors.redact(text)


def glued(left: str, right: str) -> bool:
    return bool(left and right and WORD.fullmatch(left) and WORD.fullmatch(right))


def tokens(secret: str, text: str, spelled: str = "") -> list[int]:
    """Where `secret` (or its spelling `spelled`) stands in `text` with no word character glued to an end of
    the secret that is one."""
    spelled = spelled or secret
    found, start = [], text.find(spelled)
    while start >= 0:
        end = start + len(spelled)
        before, after = text[start - 1 : start], text[end : end + 1]
        if not glued(before, secret[0]) and not glued(secret[-1], after):
            found.append(start)
        start = text.find(spelled, start + 1)
    return found


SECRETS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=MARK), min_size=1, max_size=12)
NON_WORD = st.characters(blacklist_categories=("Cs",)).filter(lambda char: not WORD.fullmatch(char))
# how a URI or a form may spell it: every reserved character encoded, or only those userinfo may not hold
ENCODINGS = st.sampled_from(
    [
        lambda secret: quote(secret, safe=""),
        lambda secret: re.sub("%..", lambda escape: escape[0].lower(), quote(secret, safe="!$&'()*+,;=")),
        lambda secret: quote_plus(secret, safe=""),
    ]
)


@st.composite
def around(draw, secret: str) -> tuple[str, str]:
    """Text before and after `secret` that leaves it a token: a non-word character (or nothing) next to a word end."""
    before, after = draw(st.text()), draw(st.text())
    if glued(before[-1:], secret[0]):
        before += draw(NON_WORD)
    if glued(secret[-1], after[:1]):
        after = draw(NON_WORD) + after
    return before, after


@given(data=st.data(), secret=SECRETS)
@example(data=None, secret="reader")
def test_a_secret_standing_as_a_token_never_survives(data, secret):
    before, after = data.draw(around(secret)) if data else ("password=", " host=db")
    shown = redacted(secret, before + secret + after).replace("<password hidden>", MARK)
    assert tokens(secret, shown) == [], shown


@given(data=st.data(), secret=SECRETS, encode=ENCODINGS)
def test_a_percent_encoded_secret_never_survives(data, secret, encode):
    encoded = encode(secret)
    before, after = data.draw(around(secret))
    shown = redacted(secret, f"{before}{encoded}{after}").replace("<password hidden>", MARK)
    assert tokens(secret, shown, spelled=encoded) == [], shown


IDENTIFIER_PARTS = st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True)


@given(secret=st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True), left=IDENTIFIER_PARTS, right=IDENTIFIER_PARTS)
@example(secret="reader", left="catalog_", right="")
def test_an_identifier_that_merely_contains_the_secret_is_printed_as_it_is(secret, left, right):
    if not left and not right:
        left = "x"
    name = left + secret + right
    shown = redacted(secret, f'role "{name}" does not exist')
    assert f'"{name}"' in shown


@pytest.mark.parametrize(
    ("secret", "text", "shown"),
    [
        (
            "reader",
            'role "catalog_reader" with password=reader',
            'role "catalog_reader" with password=<password hidden>',
        ),
        ("reader", "postgresql://u:reader@host/db", "postgresql://u:<password hidden>@host/db"),
        ("reader", "'reader' and readers", "'<password hidden>' and readers"),
        ("p@ss!", "p@ss!1 and xp@ss!", "<password hidden>1 and xp@ss!"),
        ("p@ss w", "u:p%40ss%20w@host, p%40ss+w", "u:<password hidden>@host, <password hidden>"),
    ],
)
def test_a_secret_is_hidden_where_it_stands_alone(secret, text, shown):
    assert redacted(secret, text) == shown


def test_log_lines_hide_the_secret_but_not_a_name_containing_it(caplog):
    with mock.patch.dict(errors._SECRETS, clear=True), caplog.at_level(logging.INFO, logger="tap-postgres"):
        errors.keep_secret("password", "reader")
        logging.getLogger("tap-postgres").info('user "%s" with password %s', "catalog_reader", "reader")
    assert caplog.messages == ['user "catalog_reader" with password <password hidden>']
