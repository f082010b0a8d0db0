"""The public contract of the ledger: event and signal models, their JSON, and their identities.

This module owns the pydantic models of every event type and of a signal, the one discriminated
union `Event` through which every event is decoded, the decimal and time types that keep money
exact and times in UTC, the account-name rule, and the deterministic (UUIDv5) event ids derived
from natural keys. It is pure: it must not import asyncpg, aiokafka, faststream, `time`, `os`,
`logging`, or any other module of the project except `ledger.errors`.
"""

from __future__ import annotations

import decimal
import functools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, TypeAlias, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError, core_schema

from ledger.errors import InvalidAccountName, InvalidEvent

__all__ = [
    "ACCOUNT_PATTERN",
    "COUNT_MAX",
    "DECIMAL_CONTEXT",
    "DECIMAL_DIGITS_MAX",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "EVENT_WRITERS",
    "GATES_MAX",
    "IDENTIFIER_LENGTH_MAX",
    "KEYED_TYPES",
    "LEDGER_NAMESPACE",
    "MISSING",
    "ORDER_RATE_MAX",
    "REGISTRY",
    "REPORTED_TYPES",
    "SNAPSHOT_POSITIONS_MAX",
    "TEXT_LENGTH_MAX",
    "WINDOW_SECONDS_MAX",
    "AccountName",
    "BrokerPosition",
    "BrokerPositions",
    "Difference",
    "DiscrepancyFound",
    "DiscrepancyFoundEvent",
    "DiscrepancyKind",
    "Event",
    "EventData",
    "EventKind",
    "EventType",
    "GateResult",
    "Identifier",
    "Instrument",
    "IntentCancelled",
    "IntentCancelledEvent",
    "IntentExpired",
    "IntentExpiredEvent",
    "IntentFate",
    "IntentIssued",
    "IntentIssuedEvent",
    "IntentRejected",
    "IntentRejectedEvent",
    "JsonDecimal",
    "LimitsSet",
    "LimitsSetEvent",
    "Money",
    "Multiplier",
    "NonNegativeDecimal",
    "OrderFilled",
    "OrderFilledEvent",
    "OrderRate",
    "PositionClosed",
    "PositionClosedEvent",
    "PositionsReconciled",
    "PositionsReconciledEvent",
    "PositiveDecimal",
    "Price",
    "Quantity",
    "ReconciliationFailed",
    "ReconciliationFailedEvent",
    "Side",
    "Signal",
    "SignalEvaluated",
    "SignalEvaluatedEvent",
    "Text",
    "TradingHalted",
    "TradingHaltedEvent",
    "TradingReduced",
    "TradingReducedEvent",
    "TradingResumed",
    "TradingResumedEvent",
    "UtcDatetime",
    "WindowSeconds",
    "build_event",
    "configure_decimal_context",
    "decode_broker_positions",
    "decode_event",
    "decode_signal",
    "derive_event_id",
    "encode_event",
    "encode_signal",
    "format_decimal",
    "format_time",
    "intent_key",
    "natural_key",
    "notional",
    "reconciliation_key",
    "refuse_future",
    "types_written_by",
    "underlying",
    "validate_account_name",
    "with_ledger_fields",
]

# --- Fast path ----------------------------------------------------------------------------------

# Labels of the two branches of a fast-path union; a hyphen keeps them apart from field names.
_FAST_BRANCH = "fast-path"
_CHECKED_BRANCH = "checked"


class _FastPath:
    """Accept the common JSON spelling of a value natively, before the full (Python) checks.

    Decoding is the hot path of the projector, rebuild, audit and ingest, and each Python
    validator called from pydantic-core costs about a microsecond. JSON that the native `steps`
    accept (after matching `pattern`, when given, which must only match strings the full checks
    accept, to the same value) becomes the value without entering Python, C callables such as
    Decimal aside; anything else falls through to the full checks, whose error is the one
    reported (see `_reported_errors`). Python input always takes the full checks. Put it last in
    `Annotated`, after the validators it shortcuts.
    """

    def __init__(self, *steps: CoreSchema, pattern: str | None = None,
                 max_length: int | None = None) -> None:
        text = [core_schema.str_schema(pattern=pattern, max_length=max_length, strict=True)]
        self.steps = [*(text if pattern is not None else []), *steps]

    def __get_pydantic_core_schema__(self, source: object,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        checked = handler(source)
        fast = self.steps[0] if len(self.steps) == 1 else core_schema.chain_schema(self.steps)
        return core_schema.json_or_python_schema(
            json_schema=core_schema.union_schema(
                [(fast, _FAST_BRANCH), (checked, _CHECKED_BRANCH)], mode="left_to_right"),
            python_schema=checked,
            serialization=checked.get("serialization"),
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # Document the value as the full checks see it, not as a union of two branches.
        return handler(schema["python_schema"])


def _reported_errors(details: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop the fast branch's errors and the branch labels: the full checks speak for a value."""
    reported: list[ErrorDetails] = []
    for detail in details:
        if _FAST_BRANCH in detail["loc"]:
            continue
        loc = tuple(step for step in detail["loc"] if step != _CHECKED_BRANCH)
        reported.append({**detail, "loc": loc})
    return reported


# --- Decimals -----------------------------------------------------------------------------------

DECIMAL_PRECISION = 38
# Every decimal the ledger accepts fits the context exactly, so sums of a few of them stay exact.
DECIMAL_DIGITS_MAX = DECIMAL_PRECISION
DECIMAL_CONTEXT = decimal.Context(
    prec=DECIMAL_PRECISION,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.FloatOperation,
    ],
)


def configure_decimal_context() -> None:
    """Install the ledger's decimal context in the current thread, trapping float mixing."""
    # A copy, so flags raised while computing never leak into the shared constant.
    decimal.setcontext(DECIMAL_CONTEXT.copy())


configure_decimal_context()

# Plain digits only: exponents ("1e3"), spaces, underscores and non-ASCII digits all parse as
# Decimal but would not survive an encode/decode round trip unchanged.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_FLOAT_ADVICE = 'is a float: money is written as a string like "6.50"'


def format_decimal(number: Decimal) -> str:
    """Return a decimal as plain digits, keeping its exponent ("6.00" stays "6.00")."""
    return format(number, "f")


# The error of an option without a multiplier (see `_Traded`): raised on the model, reported
# on its field.
_MULTIPLIER_MISSING = "multiplier_missing"
_MULTIPLIER_MISSING_TEXT = ("was given: required for an option (its notional is quantity x "
                            "price x multiplier)")


def _parse_decimal(value: object) -> Decimal:
    # bool is an int subclass; `true` as a quantity is a mistake, not 1.
    if isinstance(value, bool):
        raise PydanticCustomError("decimal_type", "is a boolean, not a decimal")
    if isinstance(value, float):
        raise PydanticCustomError("decimal_float", _FLOAT_ADVICE)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, str):
        if _DECIMAL_TEXT.fullmatch(value) is None:
            raise PydanticCustomError("decimal_parsing", "is not a decimal")
        # Plain digits (the pattern allows nothing else) already hold their exact value: only
        # their length needs checking, the round trip below is for other inputs.
        if len(value) - value.startswith("-") - ("." in value) > DECIMAL_DIGITS_MAX:
            raise PydanticCustomError("decimal_too_long", "has more than {digits_max} digits",
                                      {"digits_max": DECIMAL_DIGITS_MAX})
        return Decimal(value)
    else:
        raise PydanticCustomError("decimal_type", "is not a decimal")
    if not number.is_finite():
        raise PydanticCustomError("decimal_not_finite", "is not a finite decimal")
    text = format_decimal(number)
    digits = len(text) - text.startswith("-") - ("." in text)
    if digits > DECIMAL_DIGITS_MAX:
        raise PydanticCustomError(
            "decimal_too_long",
            "has more than {digits_max} digits",
            {"digits_max": DECIMAL_DIGITS_MAX},
        )
    # Re-parsing the plain text spells out positive exponents (Decimal("1E+3") -> "1000"), so the
    # value held is exactly the value that decoding its JSON gives back.
    return Decimal(text)


def _require_positive(number: Decimal) -> Decimal:
    if number <= 0:
        raise PydanticCustomError("decimal_not_positive", "is not greater than 0")
    return number


def _require_non_negative(number: Decimal) -> Decimal:
    if number < 0:
        raise PydanticCustomError("decimal_negative", "is negative: expected 0 or more")
    return number


_CheckedDecimal: TypeAlias = Annotated[
    Decimal,
    PlainValidator(_parse_decimal, json_schema_input_type=str | int),
    PlainSerializer(format_decimal, return_type=str, when_used="json"),
]
_TO_DECIMAL = core_schema.no_info_plain_validator_function(Decimal)
# The fast patterns accept plain digits of at most DECIMAL_DIGITS_MAX characters (so at most as
# many digits), and only the signs each type allows: exactly what the full checks accept as is.
JsonDecimal: TypeAlias = Annotated[
    _CheckedDecimal,
    _FastPath(_TO_DECIMAL, pattern=r"\A-?[0-9]+(?:\.[0-9]+)?\z", max_length=DECIMAL_DIGITS_MAX),
]
PositiveDecimal: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_positive),
    _FastPath(_TO_DECIMAL,
              pattern=r"\A(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)\z",
              max_length=DECIMAL_DIGITS_MAX),
]
NonNegativeDecimal: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_non_negative),
    _FastPath(_TO_DECIMAL, pattern=r"\A[0-9]+(?:\.[0-9]+)?\z", max_length=DECIMAL_DIGITS_MAX),
]


# --- Bounds ---------------------------------------------------------------------------------------
# Every number of the contract has a documented maximum (docs/events.md): below 10**digits, with
# at most `places` decimal places as written. Within them every product and sum the ledger
# forms (a notional is below 10**24, with at most 18 places) stays exact in the 38-digit context,
# and every figure fits the columns and the events that record it; a value beyond them is bad
# input, refused with one line, never an arithmetic error deep in a consumer.
QUANTITY_DIGITS, QUANTITY_PLACES = 9, 6
PRICE_DIGITS, PRICE_PLACES = 9, 6
MULTIPLIER_DIGITS, MULTIPLIER_PLACES = 6, 6
MONEY_DIGITS, MONEY_PLACES = 15, 6
COUNT_MAX = 1_000_000


class _Bound:
    """An after-validator: the value is below 10**digits, with at most `places` places."""

    def __init__(self, digits: int, places: int, what: str) -> None:
        self.limit = Decimal(10) ** digits
        self.places = places
        self.what = what

    def __call__(self, number: Decimal) -> Decimal:
        if number >= self.limit:
            raise PydanticCustomError(
                "decimal_too_large", "is too large: a {what} is below {limit}",
                {"what": self.what, "limit": format_decimal(self.limit)})
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int), number
        if -exponent > self.places:
            raise PydanticCustomError(
                "decimal_too_precise", "has more than {places} decimal places",
                {"places": self.places})
        return number


def _bounded_fast_path(digits: int, places: int, *, positive: bool) -> _FastPath:
    """The native path for a bounded decimal: plain digits within the bounds, > 0 if positive."""
    steps: list[CoreSchema] = [_TO_DECIMAL]
    if positive:
        steps.append(core_schema.decimal_schema(gt=Decimal(0), strict=True))
    return _FastPath(*steps, pattern=rf"\A[0-9]{{1,{digits}}}(?:\.[0-9]{{1,{places}}})?\z",
                     max_length=digits + places + 1)


Quantity: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_positive),
    AfterValidator(_Bound(QUANTITY_DIGITS, QUANTITY_PLACES, "quantity")),
    _bounded_fast_path(QUANTITY_DIGITS, QUANTITY_PLACES, positive=True),
]
HeldQuantity: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_non_negative),
    AfterValidator(_Bound(QUANTITY_DIGITS, QUANTITY_PLACES, "quantity")),
    _bounded_fast_path(QUANTITY_DIGITS, QUANTITY_PLACES, positive=False),
]
Price: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_positive),
    AfterValidator(_Bound(PRICE_DIGITS, PRICE_PLACES, "price")),
    _bounded_fast_path(PRICE_DIGITS, PRICE_PLACES, positive=True),
]
Multiplier: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_positive),
    AfterValidator(_Bound(MULTIPLIER_DIGITS, MULTIPLIER_PLACES, "multiplier")),
    _bounded_fast_path(MULTIPLIER_DIGITS, MULTIPLIER_PLACES, positive=True),
]
Money: TypeAlias = Annotated[
    _CheckedDecimal,
    AfterValidator(_require_non_negative),
    AfterValidator(_Bound(MONEY_DIGITS, MONEY_PLACES, "money amount")),
    _bounded_fast_path(MONEY_DIGITS, MONEY_PLACES, positive=False),
]


def notional(quantity: Decimal, price: Decimal, multiplier: Decimal) -> Decimal:
    """Return |quantity| x price x multiplier."""
    return abs(quantity) * price * multiplier


# --- Times --------------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """Return an aware time as ISO 8601 in UTC with a "Z" suffix, microseconds kept when present.

    Raises:
        ValueError: the time is naive.
    """
    if moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()!r} has no timezone")
    return moment.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def refuse_future(moment: datetime, now: datetime, clock_skew: timedelta,
                  field: str = "occurred_at") -> None:
    """Refuse a time more than `clock_skew` after `now`: no report comes from the future.

    A close stamped tomorrow would be booked on tomorrow's trading day; beyond a little clock
    disagreement, a future time is a producer's mistake.

    Raises:
        InvalidEvent: the time is too far ahead, naming the field, the value and the bound.
    """
    if moment - now > clock_skew:
        raise InvalidEvent(field, format_time(moment),
                           f"is more than {clock_skew.total_seconds():g}s in the future "
                           f"(it is now {format_time(now)})")


_NO_OFFSET = timedelta(0)


def _to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC and not moment.fold:
        return moment
    if moment.utcoffset() == _NO_OFFSET:
        # Already UTC under another tzinfo object (pydantic's own): relabel, no arithmetic.
        return moment.replace(tzinfo=UTC, fold=0)
    try:
        # fold only disambiguates wall times in zones with transitions; in UTC it is noise that
        # would make two equal instants compare and print differently.
        return moment.astimezone(UTC).replace(fold=0)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_range", "is out of range once converted to UTC"
        ) from None


# Times at offset 0 (nearly all: the ledger writes "Z"), parsed by pydantic-core and relabelled
# with datetime.UTC by a C call: the value _to_utc gives them.
UtcDatetime: TypeAlias = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    _FastPath(core_schema.datetime_schema(tz_constraint=0, strict=True),
              core_schema.no_info_plain_validator_function(
                  functools.partial(datetime.replace, tzinfo=UTC))),
]

# --- Names and text -----------------------------------------------------------------------------

ACCOUNT_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
_ACCOUNT_NAME = re.compile(ACCOUNT_PATTERN)
ACCOUNT_LENGTH_MAX = 48
IDENTIFIER_LENGTH_MAX = 200
TEXT_LENGTH_MAX = 4096
GATES_MAX = 64


def validate_account_name(name: str) -> str:
    """Return the account name if it is safe inside a PostgreSQL role name `ledger_NAME`.

    Raises:
        InvalidAccountName: the name does not match ACCOUNT_PATTERN.
    """
    # fullmatch, because `$` would also accept a trailing newline.
    if _ACCOUNT_NAME.fullmatch(name) is None:
        raise InvalidAccountName(name, ACCOUNT_PATTERN)
    return name


def _check_account(name: str) -> str:
    if _ACCOUNT_NAME.fullmatch(name) is None:
        raise PydanticCustomError(
            "account_name",
            "is not a valid account name: expected to match {pattern}",
            {"pattern": ACCOUNT_PATTERN},
        )
    return name


def _check_text(text: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL: refuse it here rather than fail at the store.
    if "\x00" in text:
        raise PydanticCustomError("text_nul", "contains a NUL character")
    return text


def _check_identifier(text: str) -> str:
    # " X-1001" and "X-1001" would derive different event ids and defeat deduplication.
    if not text.strip():
        raise PydanticCustomError("identifier_blank", "is blank: expected a non-empty identifier")
    if text != text.strip():
        raise PydanticCustomError("identifier_spaces", "has leading or trailing whitespace")
    return text


AccountName: TypeAlias = Annotated[
    str,
    AfterValidator(_check_account),
    _FastPath(pattern=r"\A" + ACCOUNT_PATTERN.strip("^$") + r"\z", max_length=ACCOUNT_LENGTH_MAX),
]
Text: TypeAlias = Annotated[
    str,
    Field(max_length=TEXT_LENGTH_MAX),
    AfterValidator(_check_text),
    _FastPath(pattern=r"\A[^\x00]*\z", max_length=TEXT_LENGTH_MAX),
]
# The fast pattern's ends exclude control characters too: Python's str.strip() also strips
# \x1c-\x1f, which are not Unicode white space (tests/properties/test_fast_path.py checks every
# code point).
Identifier: TypeAlias = Annotated[
    str,
    Field(max_length=IDENTIFIER_LENGTH_MAX),
    AfterValidator(_check_text),
    AfterValidator(_check_identifier),
    _FastPath(pattern=r"\A[^\s\x00-\x1f](?:[^\x00]*[^\s\x00-\x1f])?\z",
              max_length=IDENTIFIER_LENGTH_MAX),
]
Instrument: TypeAlias = Literal["option", "equity"]
Side: TypeAlias = Literal["long", "short"]
Count: TypeAlias = Annotated[int, Field(ge=0, le=COUNT_MAX)]
# Orders per minute: the fold keeps at most this many recent intents to count them.
ORDER_RATE_MAX = 10_000
OrderRate: TypeAlias = Annotated[int, Field(ge=0, le=ORDER_RATE_MAX)]
# A look-back window: up to a day, so what the fold keeps to answer it stays bounded.
WINDOW_SECONDS_MAX = 86_400
WindowSeconds: TypeAlias = Annotated[int, Field(ge=1, le=WINDOW_SECONDS_MAX)]
# Lines of a broker's positions, and differences a reconciliation records.
SNAPSHOT_POSITIONS_MAX = 10_000
# A stream position: PostgreSQL's bigint.
SequenceNumber: TypeAlias = Annotated[int, Field(ge=0, le=2**63 - 1)]

# --- Models -------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    # strict: "12" for a count or 1 for a flag is a producer's mistake to surface, not to coerce.
    # Decimal, time and UUID fields still accept JSON strings, because decoding goes through JSON.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _Traded(_Frozen):
    """What names an instrument and a quantity: an option's multiplier must be stated.

    An option contract is worth quantity x price x multiplier (100 for US equity options); a
    default of 1 would understate its notional a hundredfold, so for `instrument: option` a
    missing multiplier is an error, while an equity's defaults to 1.
    """

    @model_validator(mode="after")
    def _option_states_its_multiplier(self) -> _Traded:
        if getattr(self, "instrument", None) == "option" \
                and "multiplier" not in self.model_fields_set:
            raise PydanticCustomError(_MULTIPLIER_MISSING, _MULTIPLIER_MISSING_TEXT)
        return self


class Signal(_Traded):
    """A strategy's wish to trade, as read from the `signals` topic or a JSONL file."""

    signal_id: Identifier
    account: AccountName
    occurred_at: UtcDatetime
    symbol: Identifier
    instrument: Instrument
    side: Side
    quantity: Quantity
    limit_price: Price
    multiplier: Multiplier = Decimal("1")
    # Names an open position to reduce (opposite side, at most its quantity): such a signal
    # passes while the account is reducing; any other is an opening.
    position_id: Identifier | None = None

    @property
    def notional(self) -> Decimal:
        """Return what the signal would commit: |quantity| x limit_price x multiplier."""
        return notional(self.quantity, self.limit_price, self.multiplier)


class LimitsSet(_Frozen):
    """Data of LimitsSet: the account's limits from this event on."""

    max_open_positions: Count
    max_exposure: Money
    max_order_notional: Money | None = None
    daily_loss_limit: Money | None = None
    # Intents issued in the 60 s before a decision, plus the one it would issue, at most this.
    max_orders_per_minute: OrderRate | None = None
    # Open + pending exposure on one underlying (a symbol's first word), plus the order.
    max_underlying_exposure: Money | None = None
    # An intent with the same symbol, side, quantity and limit price issued within this many
    # seconds before a decision blocks it (a duplicative order).
    duplicate_window_s: WindowSeconds | None = None
    # Openings are blocked unless the last PositionsReconciled (its broker `as_of`) is at most
    # this many seconds old at the decision (gate reconciliation_stale).
    max_reconcile_age_s: WindowSeconds | None = None


class OrderFilled(_Traded):
    """Data of OrderFilled: opens a position or adds to it; resolves the intent it names."""

    fill_id: Identifier
    position_id: Identifier
    symbol: Identifier
    instrument: Instrument
    side: Side
    quantity: Quantity
    price: Price
    multiplier: Multiplier = Decimal("1")
    intent_id: Identifier | None = None
    fees: Money | None = None


class PositionClosed(_Frozen):
    """Data of PositionClosed: closes all (quantity None) or part of a position.

    `close_id` is the broker's execution id, the close's natural key: required on `executions`
    (ingest refuses a close without one); an imported history may lack it (see `natural_key`).
    """

    close_id: Identifier | None = None
    position_id: Identifier
    price: Price
    quantity: Quantity | None = None
    reason: Text | None = None
    # The intent this close executes (a reducing order): it releases that reservation.
    intent_id: Identifier | None = None


class GateResult(_Frozen):
    """One gate's verdict and the figures it compared."""

    gate: Identifier
    passed: bool
    value: JsonDecimal | None
    limit: JsonDecimal | None
    reason: Text


class SignalEvaluated(_Frozen):
    """Data of SignalEvaluated: the dispatcher's decision with the figures it saw."""

    signal_id: Identifier
    signal: Signal
    allowed: bool
    # A tuple, so that a frozen event cannot be changed through its gates and stays hashable.
    gates: tuple[GateResult, ...] = Field(max_length=GATES_MAX)
    as_of_sequence: SequenceNumber


class IntentIssued(_Traded):
    """Data of IntentIssued: a pending intent, counted against limits until resolved."""

    intent_id: Identifier
    signal_id: Identifier
    position_id: Identifier
    symbol: Identifier
    instrument: Instrument
    side: Side
    quantity: Quantity
    limit_price: Price
    multiplier: Multiplier = Decimal("1")
    expires_at: UtcDatetime
    # Only reduces the open position it names (dispatcher.gates.reduces): it reserves nothing.
    reducing: bool = False


class IntentRejected(_Frozen):
    """Data of IntentRejected: releases a pending intent."""

    intent_id: Identifier
    reason: Text


class IntentExpired(_Frozen):
    """Data of IntentExpired: releases a pending intent."""

    intent_id: Identifier
    reason: Text


class TradingHalted(_Frozen):
    """Data of TradingHalted: the account's kill switch is on."""

    reason: Text


class TradingResumed(_Frozen):
    """Data of TradingResumed: the account's kill switch is off."""

    reason: Text | None = None


class TradingReduced(_Frozen):
    """Data of TradingReduced: openings are blocked, risk-reducing orders pass."""

    reason: Text


class IntentCancelled(_Frozen):
    """Data of IntentCancelled: releases a pending intent; the router cancels it at the broker."""

    intent_id: Identifier
    reason: Text


class Difference(_Frozen):
    """One (symbol, side) where the broker's open quantity is not the ledger's ("0": none)."""

    symbol: Identifier
    side: Side
    broker: NonNegativeDecimal
    ledger: NonNegativeDecimal


class PositionsReconciled(_Frozen):
    """Data of PositionsReconciled: the broker's positions as of `as_of` are the ledger's at
    `head` (the last event the comparison saw)."""

    as_of: UtcDatetime
    head: SequenceNumber


class ReconciliationFailed(_Frozen):
    """Data of ReconciliationFailed: the broker's positions as of `as_of` differ from the
    ledger's at `head`; the account goes to reducing."""

    as_of: UtcDatetime
    head: SequenceNumber
    # The first SNAPSHOT_POSITIONS_MAX differences in (symbol, side) order, and how many more
    # there were: a comparison that finds too many still fails, and says so.
    differences: tuple[Difference, ...] = Field(min_length=1, max_length=SNAPSHOT_POSITIONS_MAX)
    omitted: Count = 0


DiscrepancyKind: TypeAlias = Literal[
    "close_beyond_open",
    "close_of_unknown_position",
    "fill_after_expiry",
    "fill_after_rejection",
    "fill_after_cancel",
    "fill_beyond_quantity",
    "fill_beyond_price",
]


class DiscrepancyFound(_Frozen):
    """Data of DiscrepancyFound: the broker reported an execution the ledger cannot reconcile.

    The execution itself is recorded as reported (the broker's truth, applied where it can be);
    this names what is wrong with it and the figures: `reported` is the broker's (a quantity or
    a price), `ledger` what the ledger held (open quantity, the intent's quantity or limit
    price). The account goes to reducing.
    """

    kind: DiscrepancyKind
    # The natural key of the execution it is about, e.g. `OrderFilled:fill_id="X-1"`.
    execution: Text
    position_id: Identifier
    intent_id: Identifier | None = None
    reported: NonNegativeDecimal | None = None
    ledger: NonNegativeDecimal | None = None
    reason: Text


# How an intent that is no longer pending ended, when it did not end in a fill.
IntentFate: TypeAlias = Literal["expired", "rejected", "cancelled"]


class BrokerPosition(_Frozen):
    """One line of a broker's positions: open quantity on one side of a symbol."""

    symbol: Identifier
    side: Side
    # Within a quantity's bounds; 0 holds nothing.
    quantity: HeldQuantity


class BrokerPositions(_Frozen):
    """The broker's own view of an account's open positions at `as_of` (topic
    `broker-positions`, or the file of `ledger reconcile`); lines of one (symbol, side) add up."""

    account: AccountName
    as_of: UtcDatetime
    positions: tuple[BrokerPosition, ...] = Field(max_length=SNAPSHOT_POSITIONS_MAX)


EventData: TypeAlias = (
    LimitsSet
    | OrderFilled
    | PositionClosed
    | SignalEvaluated
    | IntentIssued
    | IntentRejected
    | IntentExpired
    | TradingHalted
    | TradingResumed
    | TradingReduced
    | IntentCancelled
    | PositionsReconciled
    | ReconciliationFailed
    | DiscrepancyFound
)
EventType: TypeAlias = Literal[
    "LimitsSet",
    "OrderFilled",
    "PositionClosed",
    "SignalEvaluated",
    "IntentIssued",
    "IntentRejected",
    "IntentExpired",
    "TradingHalted",
    "TradingResumed",
    "TradingReduced",
    "IntentCancelled",
    "PositionsReconciled",
    "ReconciliationFailed",
    "DiscrepancyFound",
]

# Who may append each type (docs/roles.md), enforced by the database's append function
# (migrations/0011): a dispatcher to its own account only, ingest what the broker reports,
# operators the limits and trading states. The administrator may append any type (imports).
Writer: TypeAlias = Literal["dispatcher", "broker", "operator"]


class _Envelope(_Frozen):
    # `type` and `data` are declared here only to fix the field order of every event's JSON;
    # each subclass narrows them.
    event_id: uuid.UUID
    account: AccountName
    type: str
    occurred_at: UtcDatetime
    data: BaseModel
    # Assigned by the ledger; accepted on input so that an export re-imports, ignored by the store.
    sequence: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    recorded_at: UtcDatetime | None = None
    global_position: SequenceNumber | None = None

    LEDGER_FIELDS: ClassVar[tuple[str, ...]] = ("sequence", "recorded_at", "global_position")


class LimitsSetEvent(_Envelope):
    """The account's limits changed."""

    type: Literal["LimitsSet"] = "LimitsSet"
    data: LimitsSet


class OrderFilledEvent(_Envelope):
    """The broker filled an order."""

    type: Literal["OrderFilled"] = "OrderFilled"
    data: OrderFilled


class PositionClosedEvent(_Envelope):
    """A position was closed in whole or in part."""

    type: Literal["PositionClosed"] = "PositionClosed"
    data: PositionClosed


class SignalEvaluatedEvent(_Envelope):
    """The dispatcher decided on a signal."""

    type: Literal["SignalEvaluated"] = "SignalEvaluated"
    data: SignalEvaluated


class IntentIssuedEvent(_Envelope):
    """The dispatcher reserved room for an order."""

    type: Literal["IntentIssued"] = "IntentIssued"
    data: IntentIssued


class IntentRejectedEvent(_Envelope):
    """The broker or router refused an intent."""

    type: Literal["IntentRejected"] = "IntentRejected"
    data: IntentRejected


class IntentExpiredEvent(_Envelope):
    """An intent was neither filled nor rejected in time."""

    type: Literal["IntentExpired"] = "IntentExpired"
    data: IntentExpired


class TradingHaltedEvent(_Envelope):
    """Trading was halted for the account."""

    type: Literal["TradingHalted"] = "TradingHalted"
    data: TradingHalted


class TradingResumedEvent(_Envelope):
    """Trading was resumed for the account."""

    type: Literal["TradingResumed"] = "TradingResumed"
    data: TradingResumed


class TradingReducedEvent(_Envelope):
    """The account may only reduce its risk."""

    type: Literal["TradingReduced"] = "TradingReduced"
    data: TradingReduced


class IntentCancelledEvent(_Envelope):
    """An intent was cancelled (on halt): released here, cancelled at the broker."""

    type: Literal["IntentCancelled"] = "IntentCancelled"
    data: IntentCancelled


class PositionsReconciledEvent(_Envelope):
    """The broker's positions matched the ledger's."""

    type: Literal["PositionsReconciled"] = "PositionsReconciled"
    data: PositionsReconciled


class ReconciliationFailedEvent(_Envelope):
    """The broker's positions differed from the ledger's: the account is reducing."""

    type: Literal["ReconciliationFailed"] = "ReconciliationFailed"
    data: ReconciliationFailed


class DiscrepancyFoundEvent(_Envelope):
    """The broker reported what the ledger cannot reconcile: the account is reducing."""

    type: Literal["DiscrepancyFound"] = "DiscrepancyFound"
    data: DiscrepancyFound


Event: TypeAlias = Annotated[
    LimitsSetEvent
    | OrderFilledEvent
    | PositionClosedEvent
    | SignalEvaluatedEvent
    | IntentIssuedEvent
    | IntentRejectedEvent
    | IntentExpiredEvent
    | TradingHaltedEvent
    | TradingResumedEvent
    | TradingReducedEvent
    | IntentCancelledEvent
    | PositionsReconciledEvent
    | ReconciliationFailedEvent
    | DiscrepancyFoundEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

# --- Identity -----------------------------------------------------------------------------------

# Fixed forever: changing it changes every derived event id and breaks deduplication of replays.
LEDGER_NAMESPACE = uuid.UUID("d15d7c0e-ce9b-4969-abce-4819d402e6a1")

@dataclass(frozen=True)
class EventKind:
    """One event type: everything the ledger knows about it, in one row."""

    envelope: type[_Envelope]
    data: type[BaseModel]
    # Who may append it (docs/roles.md).
    writer: Writer
    # The fields of `data` that identify it: a repeat with the same values is a duplicate.
    key_fields: tuple[str, ...]
    # A setting with no identifier of its own: it happens at an instant, so the time is its key.
    keyed_by_time: bool = False
    # What a broker adapter reports on `executions` (ingest accepts only these there).
    reported: bool = False

    @property
    def keyed(self) -> bool:
        """Whether its natural key is a real identity the store must keep unique."""
        return bool(self.key_fields)


# The registry: the one place an event type is listed. The type names, writers, natural keys, the
# store's keyed types and ingest's accepted set all derive from it; `EventType`, `EventData` and
# `Event` must name the same types (checked below) because static types cannot be derived.
REGISTRY: dict[EventType, EventKind] = {
    "LimitsSet": EventKind(LimitsSetEvent, LimitsSet, "operator", (), keyed_by_time=True),
    "OrderFilled": EventKind(OrderFilledEvent, OrderFilled, "broker", ("fill_id",),
                             reported=True),
    "PositionClosed": EventKind(PositionClosedEvent, PositionClosed, "broker", ("close_id",),
                                reported=True),
    "SignalEvaluated": EventKind(SignalEvaluatedEvent, SignalEvaluated, "dispatcher",
                                 ("signal_id",)),
    "IntentIssued": EventKind(IntentIssuedEvent, IntentIssued, "dispatcher", ("intent_id",)),
    "IntentRejected": EventKind(IntentRejectedEvent, IntentRejected, "broker", ("intent_id",),
                                reported=True),
    "IntentExpired": EventKind(IntentExpiredEvent, IntentExpired, "dispatcher", ("intent_id",)),
    "TradingHalted": EventKind(TradingHaltedEvent, TradingHalted, "operator", (),
                               keyed_by_time=True),
    "TradingResumed": EventKind(TradingResumedEvent, TradingResumed, "operator", (),
                                keyed_by_time=True),
    "TradingReduced": EventKind(TradingReducedEvent, TradingReduced, "operator", (),
                                keyed_by_time=True),
    "IntentCancelled": EventKind(IntentCancelledEvent, IntentCancelled, "operator",
                                 ("intent_id",)),
    # Ingest's conclusions about what the broker reported: one per broker `as_of`, one per
    # execution and kind. Written by the ingest role, never accepted on `executions`.
    "PositionsReconciled": EventKind(PositionsReconciledEvent, PositionsReconciled, "broker",
                                     ("as_of",)),
    "ReconciliationFailed": EventKind(ReconciliationFailedEvent, ReconciliationFailed,
                                      "broker", ("as_of",)),
    "DiscrepancyFound": EventKind(DiscrepancyFoundEvent, DiscrepancyFound, "broker",
                                  ("execution", "kind")),
}
assert tuple(REGISTRY) == get_args(EventType)
assert {kind.data for kind in REGISTRY.values()} == set(get_args(EventData))
assert all(kind.envelope.model_fields["type"].default == name for name, kind in REGISTRY.items())

EVENT_TYPES: tuple[EventType, ...] = tuple(REGISTRY)
EVENT_WRITERS: dict[EventType, Writer] = {name: kind.writer for name, kind in REGISTRY.items()}
KEYED_TYPES: frozenset[EventType] = frozenset(name for name, kind in REGISTRY.items()
                                               if kind.keyed)
_TYPE_OF_DATA: dict[type[BaseModel], EventType] = {kind.data: name
                                                  for name, kind in REGISTRY.items()}


def types_written_by(writer: Writer) -> tuple[EventType, ...]:
    """Return the event types a writer may append, in registry order."""
    return tuple(name for name, kind in REGISTRY.items() if kind.writer == writer)


# What ingest accepts on `executions`: the broker's reports, not ingest's own conclusions.
REPORTED_TYPES: tuple[EventType, ...] = tuple(
    name for name, kind in REGISTRY.items() if kind.reported)


def _key_of(event_type: EventType, data: EventData, occurred_at: datetime) -> str:
    if _TYPE_OF_DATA[type(data)] != event_type:
        raise ValueError(f"event_type={event_type!r} does not match data of {type(data).__name__}")
    if isinstance(data, PositionClosed) and data.close_id is None:
        # A close from an imported history without the broker's execution id: keyed by what
        # it did, so that two partial closes at one instant are two closes (docs/events.md).
        quantity = "all" if data.quantity is None else format_decimal(data.quantity)
        return _render_key(event_type, [
            ("position_id", data.position_id), ("occurred_at", format_time(occurred_at)),
            ("quantity", quantity), ("price", format_decimal(data.price))])
    kind = REGISTRY[event_type]
    parts = [(name, _key_text(getattr(data, name))) for name in kind.key_fields]
    if kind.keyed_by_time:
        parts.append(("occurred_at", format_time(occurred_at)))
    if not kind.keyed:
        # A setting has no identifier at all: two different settings at one instant are two
        # events, and only a repeat of the same one is a duplicate.
        parts.append(("data", data.model_dump_json()))
    return _render_key(event_type, parts)


def _key_text(value: object) -> str:
    # A time keys as it is written (a broker's `as_of`), whatever offset it was given in.
    return format_time(value) if isinstance(value, datetime) else str(value)


def _render_key(event_type: str, parts: list[tuple[str, str]]) -> str:
    # json.dumps quotes and escapes each value, so no two different keys render alike.
    return event_type + ":" + ",".join(f"{name}={json.dumps(value)}" for name, value in parts)


def underlying(symbol: str) -> str:
    """Return a symbol's underlying: its first word ("QCOM 260320P00150000" -> "QCOM")."""
    return symbol.split(maxsplit=1)[0] if symbol.strip() else symbol


def intent_key(event_type: EventType, intent_id: str) -> str:
    """Return the natural key of an event about an intent (issued, expired, rejected...)."""
    return _render_key(event_type, [("intent_id", intent_id)])


def reconciliation_key(event_type: EventType, as_of: datetime) -> str:
    """Return the natural key of a reconciliation's outcome for one broker `as_of`."""
    return _render_key(event_type, [("as_of", format_time(as_of))])


def decision_key(signal_id: str) -> str:
    """Return the natural key of the SignalEvaluated that decides a signal."""
    return _render_key("SignalEvaluated", [("signal_id", signal_id)])


def derive_event_id(
    account: str, event_type: EventType, data: EventData, occurred_at: datetime
) -> uuid.UUID:
    """Derive the deterministic event id (UUIDv5) of an event from its account and natural key.

    Raises:
        ValueError: event_type does not match the class of data, or occurred_at is naive.
    """
    return uuid.uuid5(LEDGER_NAMESPACE, f"{account}/{_key_of(event_type, data, occurred_at)}")


def natural_key(event: Event) -> str:
    """Return the event's natural key, e.g. `OrderFilled:fill_id="X-1001"`, unique per account."""
    return _key_of(event.type, event.data, event.occurred_at)


# --- Decoding and encoding ----------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "nothing"


# The value of an InvalidEvent whose field is absent; its repr reads "nothing was given".
MISSING = _Missing()

# Stands in for an absent event_id until the validated data lets us derive the real one.
_PLACEHOLDER_EVENT_ID = uuid.UUID(int=0)
_EXCERPT_LENGTH_MAX = 60
_VALUE_REPR_LENGTH_MAX = 120
_TYPE_LIST = ", ".join(EVENT_TYPES)
# Errors this module raises already read as "is ..." phrases.
_OWN_ERROR_PREFIXES = ("decimal_", "datetime_range", "account_name", "text_", "identifier_")

_EXPECTED_BY_ERROR_TYPE = {
    "missing": "was given: the field is required",
    "extra_forbidden": "is in an unknown field",
    "string_type": "is not a string",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "int_parsing": "is not an integer",
    "bool_type": "is not true or false",
    "uuid_type": "is not a UUID",
    "uuid_parsing": "is not a UUID",
    "uuid_version": "is not a UUID",
    "timezone_aware": "has no timezone",
    "datetime_type": 'is not a time like "2026-02-03T17:29:04Z"',
    "datetime_parsing": 'is not a time like "2026-02-03T17:29:04Z"',
    "datetime_from_date_parsing": 'is not a time like "2026-02-03T17:29:04Z"',
    "datetime_object_invalid": 'is not a time like "2026-02-03T17:29:04Z"',
    "dict_type": "is not an object",
    "model_type": "is not an object",
    "model_attributes_type": "is not an object",
    "list_type": "is not a list",
    "tuple_type": "is not a list",
    "union_tag_not_found": f"was given: expected one of {_TYPE_LIST}",
    "union_tag_invalid": f"is not one of {_TYPE_LIST}",
}


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if len(text) <= _EXCERPT_LENGTH_MAX:
        return text
    return text[:_EXCERPT_LENGTH_MAX] + "..."


def _field_path(loc: tuple[int | str, ...], subject: str) -> str:
    # The union reports the discriminator tag as the first step ("OrderFilled", "data", ...);
    # it is the value of `type`, not a field, so it does not belong in the path.
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]
    path = ""
    for step in loc:
        if isinstance(step, int):
            path += f"[{step}]"
        else:
            path += f".{step}" if path else step
    return path or subject


def _expected(detail: ErrorDetails) -> str:
    error_type = detail["type"]
    context = detail.get("ctx", {})
    if error_type in _EXPECTED_BY_ERROR_TYPE:
        return _EXPECTED_BY_ERROR_TYPE[error_type]
    if error_type == "literal_error":
        return f"is not {context['expected']}"
    if error_type == "greater_than_equal":
        return f"is less than {context['ge']}"
    if error_type == "less_than_equal":
        return f"is too large: at most {context['le']}"
    if error_type == "greater_than":
        return f"is not greater than {context['gt']}"
    if error_type in ("string_too_long", "too_long"):
        return f"is too long: at most {context.get('max_length')}"
    if error_type.startswith(_OWN_ERROR_PREFIXES):
        return detail["msg"]
    return f"is invalid: {detail['msg']}"


def _value(detail: ErrorDetails, raw: bytes | str) -> object:
    error_type = detail["type"]
    if error_type == "json_invalid":
        return _excerpt(raw)
    if error_type in ("missing", "union_tag_not_found", _MULTIPLIER_MISSING):
        return MISSING
    if error_type == "union_tag_invalid":
        return detail.get("ctx", {}).get("tag")
    value: object = detail["input"]
    if isinstance(value, (dict, list)) and len(repr(value)) > _VALUE_REPR_LENGTH_MAX:
        return repr(value)[:_VALUE_REPR_LENGTH_MAX] + "..."
    return value


def _invalid(
    error: ValidationError, raw: bytes | str, line: int | None, subject: str
) -> InvalidEvent:
    details = _reported_errors(error.errors(include_url=False))
    first = details[0]
    if first["type"] == "json_invalid":
        field = "json"
        expected = f"is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    elif first["type"].startswith("union_tag_"):
        field = "type"
        expected = _expected(first)
    elif first["type"] == _MULTIPLIER_MISSING:
        field = _field_path((*first["loc"], "multiplier"), subject)
        expected = _MULTIPLIER_MISSING_TEXT
    else:
        field = _field_path(first["loc"], subject)
        expected = _expected(first)
    if len(details) > 1:
        expected += f" (and {len(details) - 1} more)"
    return InvalidEvent(field, _value(first, raw), expected, line=line)


def _with_placeholder_id(raw: bytes | str) -> str | None:
    """Return the JSON with a placeholder event_id if it is an object without one, else None."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        # Malformed (or absurdly nested) input: let pydantic's JSON parser report it, like
        # every other error.
        return None
    if not isinstance(document, dict) or "event_id" in document:
        return None
    document["event_id"] = str(_PLACEHOLDER_EVENT_ID)
    return json.dumps(document)


def _with_derived_id(event: Event) -> Event:
    event_id = derive_event_id(event.account, event.type, event.data, event.occurred_at)
    return event.model_copy(update={"event_id": event_id})


def decode_event(raw: bytes | str, line: int | None = None) -> Event:
    """Decode and validate one event from JSON, deriving event_id when it is absent.

    Raises:
        InvalidEvent: the JSON is malformed or the event is invalid; the message is one line
            naming the first bad field and its value, prefixed with `line N: ` when line is given.
    """
    # Nearly every event carries its id (all that the ledger itself writes): skip the extra
    # parse unless the key is absent from the text.
    marker = b'"event_id"' if isinstance(raw, bytes) else '"event_id"'
    with_placeholder = None if marker in raw else _with_placeholder_id(raw)  # type: ignore[operator]
    try:
        event = EVENT_ADAPTER.validate_json(raw if with_placeholder is None else with_placeholder)
    except ValidationError as error:
        raise _invalid(error, raw, line, "event") from None
    return event if with_placeholder is None else _with_derived_id(event)


def decode_signal(raw: bytes | str, line: int | None = None) -> Signal:
    """Decode and validate one signal from JSON.

    Raises:
        InvalidEvent: the JSON is malformed or the signal is invalid; the message is one line
            naming the first bad field and its value, prefixed with `line N: ` when line is given.
    """
    try:
        return Signal.model_validate_json(raw)
    except ValidationError as error:
        raise _invalid(error, raw, line, "signal") from None


def decode_broker_positions(raw: bytes | str, line: int | None = None) -> BrokerPositions:
    """Decode and validate a broker's positions from JSON.

    Raises:
        InvalidEvent: the JSON is malformed or invalid; one line naming the first bad field.
    """
    try:
        return BrokerPositions.model_validate_json(raw)
    except ValidationError as error:
        raise _invalid(error, raw, line, "positions") from None


def build_event(
    account: str,
    occurred_at: datetime,
    data: EventData,
    event_id: uuid.UUID | None = None,
) -> Event:
    """Build a validated event around data, deriving event_id from its natural key if not given.

    Raises:
        InvalidEvent: the account name or the time is invalid.
    """
    fields = {
        "event_id": _PLACEHOLDER_EVENT_ID if event_id is None else event_id,
        "account": account,
        "type": _TYPE_OF_DATA[type(data)],
        "occurred_at": occurred_at,
        "data": data,
    }
    try:
        event = EVENT_ADAPTER.validate_python(fields)
    except ValidationError as error:
        raise _invalid(error, "", None, "event") from None
    return event if event_id is not None else _with_derived_id(event)


def with_ledger_fields(
    event: Event, sequence: int, recorded_at: datetime, global_position: int
) -> Event:
    """Return a copy of the event carrying the fields the ledger assigns when it stores it.

    Raises:
        InvalidEvent: sequence < 1, global_position < 0 or recorded_at is naive.
    """
    fields = {name: getattr(event, name) for name in type(event).model_fields}
    fields.update(sequence=sequence, recorded_at=recorded_at, global_position=global_position)
    try:
        return EVENT_ADAPTER.validate_python(fields)
    except ValidationError as error:
        raise _invalid(error, "", None, "event") from None


def encode_event(event: Event) -> bytes:
    """Encode an event as compact JSON: decimals as strings, times in UTC with "Z"."""
    # Ledger fields are absent until the ledger assigns them; other None fields stay as null so
    # that the shape of the data is the same on every line.
    unassigned = {name for name in _Envelope.LEDGER_FIELDS if getattr(event, name) is None}
    return EVENT_ADAPTER.dump_json(event, exclude=unassigned)


def encode_signal(signal: Signal) -> bytes:
    """Encode a signal as compact JSON: decimals as strings, times in UTC with "Z"."""
    return signal.model_dump_json(exclude_none=True).encode()
