"""Goal: the native fast path of decoding changes nothing but speed. For every JSON value, a type
with its fast path decodes to exactly what the full checks alone give (same value, same exponent,
same tzinfo object), or fails with exactly the error the full checks report.

Method: each public field type is compared with the same type stripped of its fast path, on
hypothesis-made JSON near every boundary the fast patterns draw (signs, zeros, digit counts,
exponents, offsets, blanks, NUL, control characters), and on every Unicode code point at the ends
of an identifier, where Python's idea of white space and the regex engine's could differ.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, get_args, get_origin

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ConfigDict, TypeAdapter, ValidationError

from ledger import events
from ledger.events import (
    DECIMAL_DIGITS_MAX,
    AccountName,
    Identifier,
    JsonDecimal,
    Money,
    Multiplier,
    NonNegativeDecimal,
    PositiveDecimal,
    Price,
    Quantity,
    Text,
    UtcDatetime,
)

STRICT = ConfigDict(strict=True)


def _without_fast_path(alias: Any) -> Any:
    """The same Annotated type with every _FastPath marker removed (nested ones included)."""
    if get_origin(alias) is not Annotated:
        return alias
    base, *metadata = get_args(alias)
    kept = [item for item in metadata if not isinstance(item, events._FastPath)]
    return Annotated[(_without_fast_path(base), *kept)]


def _outcome(adapter: TypeAdapter[Any], document: str) -> tuple[object, ...]:
    try:
        value = adapter.validate_json(document)
    except ValidationError as error:
        first = events._reported_errors(error.errors(include_url=False))[0]
        return ("error", first["type"], first["msg"], first["loc"])
    tz = getattr(value, "tzinfo", None)
    return ("ok", type(value), repr(value), id(tz) if tz is not None else None,
            getattr(value, "fold", None))


def _assert_same(alias: Any, document: str) -> None:
    fast = TypeAdapter(alias, config=STRICT)
    checked = TypeAdapter(_without_fast_path(alias), config=STRICT)
    assert _outcome(fast, document) == _outcome(checked, document), document


DECIMAL_TYPES = [JsonDecimal, PositiveDecimal, NonNegativeDecimal, Quantity, Price, Multiplier,
                 Money]

decimal_texts = st.one_of(
    st.from_regex(r"\A-?0*[0-9]{0,40}(\.[0-9]{0,40})?\Z"),
    st.from_regex(r"\A[+-]?[0-9]{1,5}([eE][+-]?[0-9]{1,3})?\Z"),
    # Around every bound: digits below 10**n and places up to 6 on either side of them.
    st.from_regex(r"\A0*[0-9]{5,16}(\.[0-9]{4,8})?\Z"),
    st.sampled_from(["999999999.999999", "1000000000", "999999.999999", "1000000",
                     "999999999999999.999999", "1000000000000000", "1.0000000", "0.000001",
                     "0.0000001", "0000000001", "00000000000001.5"]),
    st.sampled_from(["0", "-0", "0.0", "00.00", "-0.000", ".5", "5.", "1_000", " 1", "1 ",
                     "NaN", "Infinity", "-", "", "١٢", "9" * DECIMAL_DIGITS_MAX,
                     "9" * (DECIMAL_DIGITS_MAX + 1), "-" + "9" * DECIMAL_DIGITS_MAX,
                     "0." + "0" * (DECIMAL_DIGITS_MAX - 1) + "1"]),
)
json_scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())


@given(decimal_texts)
def test_decimal_strings_decode_as_the_full_checks_decode_them(text: str) -> None:
    for alias in DECIMAL_TYPES:
        _assert_same(alias, json.dumps(text))


@given(json_scalars)
def test_decimal_non_strings_decode_as_the_full_checks_decode_them(value: object) -> None:
    for alias in DECIMAL_TYPES:
        _assert_same(alias, json.dumps(value))


offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=st.one_of(st.just(UTC), offsets))


@given(moments, st.sampled_from(["iso", "z", "-00:00", "naive", "seconds"]))
def test_times_decode_as_the_full_checks_decode_them(moment: datetime, spelling: str) -> None:
    text = moment.isoformat()
    if spelling == "z" and moment.utcoffset() == timedelta(0):
        text = moment.replace(tzinfo=None).isoformat() + "Z"
    elif spelling == "-00:00" and moment.utcoffset() == timedelta(0):
        text = moment.replace(tzinfo=None).isoformat() + "-00:00"
    elif spelling == "naive":
        text = moment.replace(tzinfo=None).isoformat()
    elif spelling == "seconds":
        _assert_same(UtcDatetime, json.dumps(int(moment.timestamp())))
        return
    _assert_same(UtcDatetime, json.dumps(text))


@given(st.text(max_size=60) | st.from_regex(r"\A[a-z_0-9]{0,50}\Z"))
def test_names_and_texts_decode_as_the_full_checks_decode_them(text: str) -> None:
    for alias in (AccountName, Identifier, Text):
        _assert_same(alias, json.dumps(text))


@pytest.mark.parametrize("alias", [Identifier, Text, AccountName])
def test_long_strings_decode_as_the_full_checks_decode_them(alias: Any) -> None:
    for length in (47, 48, 49, 199, 200, 201, 4096, 4097):
        _assert_same(alias, json.dumps("a" * length))


def test_every_code_point_at_the_ends_of_an_identifier_is_judged_alike() -> None:
    fast = TypeAdapter(Identifier, config=STRICT)
    checked = TypeAdapter(_without_fast_path(Identifier), config=STRICT)
    documents = [json.dumps(spelled, ensure_ascii=False)
                 for point in range(0x110000) if not 0xD800 <= point <= 0xDFFF
                 for spelled in (chr(point) + "x", "x" + chr(point))]
    differing = [document for document in documents
                 if _outcome(fast, document) != _outcome(checked, document)]
    assert differing == []
