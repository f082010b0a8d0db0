"""The risk gates: a pure function from (account state, signal, now, freshness) to a decision.

Every gate is evaluated and reported with its figures, so a decision shows why it was allowed or
blocked ("Positions 5 + 1 > 5", "Exposure $9,000.00 + $1,800.00 > $10,000.00"). Pending intents
count exactly like open positions: the check and the reservation commit together in the
dispatcher's transaction, so what is pending is never invisible. The gates are listed in order of
precedence; the first failed one is the decision's code. A gate raises only on a programmer
error. Must not import asyncpg, aiokafka, faststream, time, os or logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.events import (
    DECIMAL_CONTEXT,
    DECIMAL_DIGITS_MAX,
    GateResult,
    IntentIssued,
    Signal,
    underlying,
)
from ledger.money import money_text
from projections.fold import RATE_WINDOW, AccountState, Limits, Position, trading_day
from projections.rules import RULES, LimitRule

# Reject codes, in order of precedence.
PROJECTION_STALE = "projection_stale"
SIGNAL_STALE = "signal_stale"
TRADING_HALTED = "trading_halted"
TRADING_REDUCING = "trading_reducing"
LIMITS_NOT_SET = "limits_not_set"
RECONCILIATION_STALE = "reconciliation_stale"
MAX_ORDER_NOTIONAL = "max_order_notional"
MAX_OPEN_POSITIONS = "max_open_positions"
MAX_EXPOSURE = "max_exposure"
MAX_UNDERLYING_EXPOSURE = "max_underlying_exposure"
MAX_ORDER_RATE = "max_order_rate"
DUPLICATE_ORDER = "duplicate_order"
DAILY_LOSS_LIMIT = "daily_loss_limit"
GATES = (PROJECTION_STALE, SIGNAL_STALE, TRADING_HALTED, TRADING_REDUCING, LIMITS_NOT_SET,
         RECONCILIATION_STALE, MAX_ORDER_NOTIONAL, MAX_OPEN_POSITIONS, MAX_EXPOSURE,
         MAX_UNDERLYING_EXPOSURE, MAX_ORDER_RATE, DUPLICATE_ORDER, DAILY_LOSS_LIMIT)

_CENT = Decimal("0.01")
# Figures are compared exactly but recorded to this many places: an average like 1.41666…
# carries 38 digits, more than an event's decimal field accepts.
_FIGURE_PLACES = 10
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Freshness:
    """How current the state is: the stream's head against what the state reflects."""

    head: int
    state_sequence: int
    fold_bound: int

    @property
    def lag(self) -> int:
        return self.head - self.state_sequence


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of the gates: allowed, or blocked with the first failed gate's code."""

    allowed: bool
    gates: tuple[GateResult, ...]

    @property
    def code(self) -> str | None:
        """Return the first failed gate's code (None when allowed)."""
        return next((gate.gate for gate in self.gates if not gate.passed), None)

    @property
    def reason(self) -> str:
        failed = [gate.reason for gate in self.gates if not gate.passed]
        return "; ".join(failed) if failed else "all gates passed"


def evaluate(state: AccountState, signal: Signal, now: datetime, freshness: Freshness, *,
             max_signal_age: timedelta | None = None) -> Decision:
    """Evaluate every gate for one signal against the account's state at `now`.

    `max_signal_age`: a signal that occurred longer ago than this is stale (None: not checked,
    as for dated signals replayed from a file).
    """
    assert signal.account == state.account, (signal.account, state.account)
    results = [_freshness(freshness)]
    if not results[0].passed:
        # A state we cannot prove current has no figures worth reporting.
        return Decision(allowed=False, gates=tuple(results))
    results.append(_signal_age(signal, now, max_signal_age))
    results.append(_halted(state))
    reduced = reduces(state, signal)
    results.append(_reducing(state, signal, reduced))
    limits = state.limits
    if limits is None:
        results.append(GateResult(gate=LIMITS_NOT_SET, passed=False, value=None, limit=None,
                                  reason="Limits never set: nothing may be traded"))
        return Decision(allowed=False, gates=tuple(results))
    results.append(_reconciled(state, now, limits, reduced))
    order = signal.notional
    positions = Decimal(state.open_positions + state.pending_count)
    exposure = state.exposure
    name = underlying(signal.symbol)
    if reduced is not None:
        # An order that only reduces an open position adds no position and no exposure.
        why = f"reduces position {reduced.position_id}: no new risk"
        results.extend(_reduces(rule, why) for rule in (
            RULES["max_order_notional"], RULES["max_open_positions"], RULES["max_exposure"],
            RULES["max_underlying_exposure"]))
    else:
        results.append(_at_most(RULES["max_order_notional"], order, limits,
                                f"Order {money_text(order)}"))
        results.append(_at_most(
            RULES["max_open_positions"], positions + 1, limits,
            f"Positions {state.open_positions} + {state.pending_count} pending + 1"))
        results.append(_at_most(RULES["max_exposure"], exposure + order, limits,
                                f"Exposure {money_text(exposure)} + {money_text(order)}"))
        on_name = state.exposure_on(name)
        results.append(_at_most(RULES["max_underlying_exposure"], on_name + order, limits,
                                f"{name} exposure {money_text(on_name)} + {money_text(order)}"))
    recent = len(state.intents_since(now - RATE_WINDOW))
    results.append(_at_most(RULES["max_order_rate"], Decimal(recent + 1), limits,
                            f"Orders {recent} in the last 60 s + 1"))
    results.append(_duplicates(state, signal, now, limits))
    results.append(_daily_loss(state, now, limits))
    return Decision(allowed=all(result.passed for result in results), gates=tuple(results))


def _freshness(freshness: Freshness) -> GateResult:
    lag = freshness.lag
    passed = 0 <= lag <= freshness.fold_bound
    relation = "within" if passed else "beyond"
    return GateResult(
        gate=PROJECTION_STALE, passed=passed, value=Decimal(lag),
        limit=Decimal(freshness.fold_bound),
        reason=f"Projection {lag} events behind head {freshness.head}, {relation} the fold "
               f"bound {freshness.fold_bound}")


def _signal_age(signal: Signal, now: datetime, max_age: timedelta | None) -> GateResult:
    # Milliseconds are what a person compares; the figure is exact to them.
    age = Decimal(round((now - signal.occurred_at) / _MILLISECOND)) / 1000
    if max_age is None:
        return GateResult(gate=SIGNAL_STALE, passed=True, value=age, limit=None,
                          reason=f"Signal {age:f} s old: age not checked")
    limit = Decimal(round(max_age / _MILLISECOND)) / 1000
    passed = age <= limit
    return GateResult(gate=SIGNAL_STALE, passed=passed, value=age, limit=limit,
                      reason=f"Signal {age:f} s old {'<=' if passed else '>'} {limit:f} s")


def reduces(state: AccountState, signal: Signal) -> Position | None:
    """Return the open position a signal only reduces, or None when it would open or add risk.

    It reduces when it names an open position of its symbol, takes the opposite side and at most
    the quantity still open once the reductions already pending on that position are done: two
    reductions of 3 on a position of 5 would sell 6, and the second one opens a short of 1.
    """
    if signal.position_id is None:
        return None
    position = state.positions.get(signal.position_id)
    if position is None or position.side == signal.side or position.symbol != signal.symbol:
        return None
    if signal.quantity > position.quantity - state.reducing_pending_on(position.position_id):
        return None
    return position


def issued_intent(signal: Signal, intent_id: str, expires_at: datetime,
                  reduced: Position | None) -> IntentIssued:
    """Return the intent an allowed signal issues; `reduced`: what `reduces` returned for it.

    A reducing intent names the position it reduces and reserves nothing; an opening one names
    the position it opens.
    """
    position_id = reduced.position_id if reduced is not None else f"P-{intent_id}"
    return IntentIssued(
        intent_id=intent_id, signal_id=signal.signal_id, position_id=position_id,
        symbol=signal.symbol, instrument=signal.instrument, side=signal.side,
        quantity=signal.quantity, limit_price=signal.limit_price, multiplier=signal.multiplier,
        expires_at=expires_at, reducing=reduced is not None)


def _reducing(state: AccountState, signal: Signal, reduced: Position | None) -> GateResult:
    if not state.reducing:
        return GateResult(gate=TRADING_REDUCING, passed=True, value=None, limit=None,
                          reason="Trading not reducing")
    if reduced is not None:
        return GateResult(gate=TRADING_REDUCING, passed=True, value=None, limit=None,
                          reason=f"Trading reducing: {signal.side} {signal.quantity:f} reduces "
                                 f"position {reduced.position_id}")
    return GateResult(gate=TRADING_REDUCING, passed=False, value=None, limit=None,
                      reason=f"Trading reducing ({state.halt_reason or 'no reason given'}): "
                             "openings blocked")


def _reconciled(state: AccountState, now: datetime, limits: Limits,
                reduced: Position | None) -> GateResult:
    """Openings need a reconciliation with the broker at most max_reconcile_age_s old."""
    limit_s = limits.max_reconcile_age_s
    last = state.reconciled_as_of
    age = None if last is None else Decimal(round((now - last) / _MILLISECOND)) / 1000
    if limit_s is None:
        return GateResult(gate=RECONCILIATION_STALE, passed=True, value=age, limit=None,
                          reason="Reconciliation age: no limit set")
    limit = Decimal(limit_s)
    if reduced is not None:
        return GateResult(gate=RECONCILIATION_STALE, passed=True, value=age, limit=limit,
                          reason=f"reduces position {reduced.position_id}: no new risk")
    if age is None:
        return GateResult(gate=RECONCILIATION_STALE, passed=False, value=None, limit=limit,
                          reason=f"Never reconciled with the broker: openings need a "
                                 f"reconciliation at most {limit_s} s old")
    passed = age <= limit
    return GateResult(gate=RECONCILIATION_STALE, passed=passed, value=age, limit=limit,
                      reason=f"Last reconciliation {age:f} s old {'<=' if passed else '>'} "
                             f"{limit_s} s")


def _reduces(rule: LimitRule, why: str) -> GateResult:
    return GateResult(gate=rule.gate, passed=True, value=None, limit=None, reason=why)


def _duplicates(state: AccountState, signal: Signal, now: datetime, limits: Limits) -> GateResult:
    rule = RULES["duplicate_order"]
    window = limits.duplicate_window_s
    if window is None:
        return GateResult(gate=rule.gate, passed=True, value=None, limit=None,
                          reason="Duplicate orders: no window set")
    same = [intent for intent in state.intents_since(now - timedelta(seconds=window))
            if intent.symbol == signal.symbol and intent.side == signal.side
            and intent.quantity == signal.quantity and intent.limit_price == signal.limit_price]
    limit = rule.limit(limits)
    assert limit is not None
    passed = not rule.blocks(Decimal(len(same)), limit)
    reason = (f"No identical order in the last {window} s" if passed else
              f"Duplicate of intent {same[-1].intent_id} issued "
              f"{(now - same[-1].occurred_at).total_seconds():.1f} s ago within {window} s "
              "(same symbol, side, quantity and limit price)")
    return GateResult(gate=rule.gate, passed=passed, value=Decimal(len(same)), limit=limit,
                      reason=reason)


def _halted(state: AccountState) -> GateResult:
    reason = (f"Trading halted: {state.halt_reason or 'no reason given'}" if state.halted
              else "Trading not halted")
    return GateResult(gate=TRADING_HALTED, passed=not state.halted, value=None, limit=None,
                      reason=reason)


def _at_most(rule: LimitRule, value: Decimal, limits: Limits, what: str) -> GateResult:
    limit = rule.limit(limits)
    if limit is None:
        return GateResult(gate=rule.gate, passed=True, value=_figure(value), limit=None,
                          reason=f"{what}: no limit set")
    passed = not rule.blocks(value, limit)
    shown = f"{limit:f}" if rule.unit == "count" else money_text(limit)
    return GateResult(gate=rule.gate, passed=passed, value=_figure(value), limit=limit,
                      reason=f"{what} {'<=' if passed else '>'} {shown}")


def _daily_loss(state: AccountState, now: datetime, limits: Limits) -> GateResult:
    # "Today" is the trading day of the decision being made (projections.fold.trading_day).
    loss = -state.realized_pnl_on(trading_day(now))
    rule = RULES["daily_loss_limit"]
    limit = rule.limit(limits)
    if limit is None:
        return GateResult(gate=DAILY_LOSS_LIMIT, passed=True, value=_figure(loss), limit=None,
                          reason="Daily loss: no limit set")
    # Trading stops once the day's realised loss has reached the limit.
    passed = not rule.blocks(loss, limit)
    return GateResult(gate=DAILY_LOSS_LIMIT, passed=passed, value=_figure(loss), limit=limit,
                      reason=f"Daily loss {money_text(loss)} {'<' if passed else '>='} "
                             f"{money_text(limit)}")


def _figure(value: Decimal | None) -> Decimal | None:
    """Return a figure as recorded: exact unless it has more than ten decimal places, and never
    more digits than an event's decimal field holds (so recording it cannot fail)."""
    if value is None:
        return value
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), value
    # Keep the digits a field holds: fewer decimal places for a larger figure.
    places = min(_FIGURE_PLACES, max(0, DECIMAL_DIGITS_MAX - 1 - value.adjusted()))
    if -exponent <= places:
        return value
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN,
                          context=DECIMAL_CONTEXT)


