"""What the tap should emit for a value, worked out in Python from the value's PostgreSQL text.

The oracle reads each value with the type's output function (`format('%s', v)`, which keeps char(n)
padding where a cast to text strips it) in a session with the tap's settings, and one matcher per
type family turns that text into the documented JSON value (README "Types" and types.py): this
never runs the tap's render SQL, so it checks it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

from generative.script import ident
from generative.strategies import Column

HI = "9999-12-31T23:59:59.999999+00:00"
LO = "0001-01-01T00:00:00+00:00"

# the tap's session settings (README: every session runs with these)
ORACLE_SETTINGS = "TimeZone = 'UTC'; SET DateStyle = ISO; SET IntervalStyle = iso_8601; SET extra_float_digits = 3"


def match_integer(text: str) -> int:
    return int(text)


def match_numeric(text: str) -> Decimal | None:
    return None if text in ("NaN", "Infinity", "-Infinity") else Decimal(text)


match_float = match_numeric  # same rule: NaN and both infinities are null, the rest the exact text


def match_boolean(text: str) -> bool:
    return text == "t"


def match_bit1(text: str) -> bool:
    return text == "1"


def match_string(text: str) -> str:
    return text


def match_json(text: str):
    return json.loads(text, parse_float=Decimal)


def match_hstore(text: str) -> dict:
    """Parse hstore's output: "k"=>"v", "k2"=>NULL."""
    pairs, position = {}, 0
    token = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*=>\s*(NULL|"((?:[^"\\]|\\.)*)")\s*,?')
    while position < len(text):
        found = token.match(text, position)
        assert found, f"cannot parse hstore {text!r} at {position}"
        key = re.sub(r"\\(.)", r"\1", found.group(1))
        value = None if found.group(2) == "NULL" else re.sub(r"\\(.)", r"\1", found.group(3))
        pairs[key] = value
        position = found.end()
    return pairs


def _clamped(text: str) -> str | None:
    """Return HI or LO for infinities, BC and years past 9999; None when the value is in range."""
    if text == "infinity":
        return HI
    if text == "-infinity" or text.endswith(" BC"):
        return LO
    if int(text.split("-", 1)[0]) > 9999:
        return HI
    return None


def match_date(text: str) -> str:
    return _clamped(text) or f"{text}T00:00:00+00:00"


def match_timestamp(text: str) -> str:
    return _clamped(text) or text.replace(" ", "T", 1) + "+00:00"


def match_timestamptz(text: str) -> str:
    clamped = _clamped(text)
    if clamped:
        return clamped
    assert text.endswith("+00"), text  # the session is in UTC
    return text[:-3].replace(" ", "T", 1) + "+00:00"


def match_time(text: str) -> str:
    return "00:00:00" if text == "24:00:00" else text


def match_timetz(text: str) -> str:
    """Convert to UTC and drop the offset: 10:00:00+02 is 08:00:00."""
    found = re.fullmatch(r"(\d\d):(\d\d):(\d\d)(\.\d+)?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?", text)
    assert found, text
    hours, minutes, seconds, fraction, sign, off_h, off_m, off_s = found.groups()
    offset = int(off_h) * 3600 + int(off_m or 0) * 60 + int(off_s or 0)
    total = (int(hours) * 3600 + int(minutes) * 60 + int(seconds) - (offset if sign == "+" else -offset)) % 86400
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}{fraction or ''}"


def match_bytea(text: str) -> str:
    assert text.startswith("\\x"), text
    return text[2:]


FAMILIES = {
    "integer": match_integer,
    "numeric": match_numeric,
    "float": match_float,
    "boolean": match_boolean,
    "bit1": match_bit1,
    "string": match_string,
    "json": match_json,
    "hstore": match_hstore,
    "date": match_date,
    "timestamp": match_timestamp,
    "timestamptz": match_timestamptz,
    "time": match_time,
    "timetz": match_timetz,
    "bytea": match_bytea,
}


def oracle_expression(column: Column, source: str = "src") -> str:
    """SQL reading a column's value as output text: text, text[] of the elements (flattened) for arrays."""
    value = f"{source}.{ident(column.name)}"
    if not column.type.array:
        return f"CASE WHEN {value} IS NULL THEN NULL ELSE format('%s', {value}) END"
    return (
        f"CASE WHEN {value} IS NULL THEN NULL ELSE ARRAY(SELECT CASE WHEN u.x IS NULL THEN NULL "
        f"ELSE format('%s', u.x) END FROM unnest({value}) WITH ORDINALITY AS u(x, n) ORDER BY u.n) END"
    )


def oracle_select(columns: list[Column], source: str = "src") -> str:
    """The select list of the oracle: every column's text."""
    return ", ".join(oracle_expression(column, source) for column in columns)


def expected_value(column: Column, text):
    """The JSON value the tap should emit for a column's oracle text (a list of texts for arrays)."""
    if text is None:
        return None
    match = FAMILIES[column.type.base.family]
    if column.type.array:
        return [None if item is None else match(item) for item in text]
    return match(text)


def canonical(value):
    """A hashable form in which two JSON values are equal exactly when they are the same JSON value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | Decimal):
        number = Decimal(value)
        return ("number", "0" if number == 0 else str(number.normalize()))
    if isinstance(value, float):
        raise AssertionError(f"a float {value!r}: parse JSON with parse_float=Decimal")
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((key, canonical(item)) for key, item in value.items())))
    raise AssertionError(f"not a JSON value: {value!r}")
