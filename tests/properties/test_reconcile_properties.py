"""Goal: reconciliation finds exactly what differs between the broker and the ledger.

Method: hypothesis folds a random history of one account (the fold properties' histories: fills
on both sides, adds, partial and full closes, flips, closes of unknown positions) and derives the
broker's view from the state it leaves, each (symbol, side) split into random lines as a broker
may report lots. That view always matches. Then one perturbation is applied to the broker's
view (a quantity off, a line missing, a symbol the ledger never held, a side flipped) and the
differences must be exactly the one(s) the perturbation makes, computed here by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger.events import BrokerPosition, BrokerPositions, Difference, Event, Side
from projections.fold import fold
from projections.reconcile import compare, ledger_holdings
from tests.properties.test_fold_properties import ACCOUNT, histories

AS_OF = datetime(2026, 2, 3, 17, 45, tzinfo=UTC)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
Holdings = dict[tuple[str, Side], Decimal]


@st.composite
def lines_of(draw: st.DrawFn, holdings: Holdings) -> list[BrokerPosition]:
    """The broker's lines for holdings: each (symbol, side) in 1 to 3 lots, in any order."""
    lines: list[BrokerPosition] = []
    for (symbol, side), quantity in sorted(holdings.items()):
        parts = draw(st.integers(1, 3))
        cuts = sorted(draw(st.lists(st.integers(1, 99), min_size=parts - 1,
                                    max_size=parts - 1)))
        shares = [quantity * Decimal(b - a) / 100 for a, b in zip([0, *cuts], [*cuts, 100],
                                                                      strict=True)]
        # What rounding left over goes to the last lot, so the lots add up exactly.
        shares[-1] = quantity - sum(shares[:-1], Decimal(0))
        lines += [BrokerPosition(symbol=symbol, side=side, quantity=share)
                  for share in shares if share > 0]
    return draw(st.permutations(lines))


def view(lines: list[BrokerPosition]) -> BrokerPositions:
    return BrokerPositions(account=ACCOUNT, as_of=AS_OF, positions=tuple(lines))


def other(side: Side) -> Side:
    return "short" if side == "long" else "long"


@PROPERTY_SETTINGS
@given(data=st.data(), events=histories())
def test_compare_when_broker_view_derived_from_the_history_always_matches(
    data: st.DataObject, events: list[Event],
) -> None:
    # Arrange
    state = fold(events, account=ACCOUNT)
    lines = data.draw(lines_of(ledger_holdings(state.positions)))

    # Act
    differences = compare(state.positions, view(lines))

    # Assert
    assert differences == []


@PROPERTY_SETTINGS
@given(data=st.data(), events=histories(),
       perturbation=st.sampled_from(["off", "missing", "extra", "flip"]))
def test_compare_when_one_thing_in_the_broker_view_is_perturbed_finds_exactly_it(
    data: st.DataObject, events: list[Event], perturbation: str,
) -> None:
    # Arrange
    state = fold(events, account=ACCOUNT)
    ours = ledger_holdings(state.positions)
    theirs = dict(ours)
    expected: list[Difference]
    if perturbation == "extra":
        quantity = data.draw(st.decimals(places=2, min_value=Decimal("0.01"),
                                         max_value=Decimal("500")))
        theirs[("SYM-NEVER-HELD", "long")] = quantity
        expected = [Difference(symbol="SYM-NEVER-HELD", side="long", broker=quantity,
                               ledger=Decimal(0))]
    else:
        assume(ours)
        key = data.draw(st.sampled_from(sorted(ours)))
        symbol, side = key
        held = ours[key]
        if perturbation == "off":
            delta = data.draw(st.decimals(places=2, min_value=Decimal("0.01"),
                                          max_value=Decimal("50")))
            reported = held + delta if data.draw(st.booleans()) or delta >= held else held - delta
            theirs[key] = reported
            expected = [Difference(symbol=symbol, side=side, broker=reported, ledger=held)]
        elif perturbation == "missing":
            del theirs[key]
            expected = [Difference(symbol=symbol, side=side, broker=Decimal(0), ledger=held)]
        else:
            del theirs[key]
            flipped = (symbol, other(side))
            also = ours.get(flipped, Decimal(0))
            theirs[flipped] = also + held
            rows = {side: Difference(symbol=symbol, side=side, broker=Decimal(0), ledger=held),
                    other(side): Difference(symbol=symbol, side=other(side), broker=also + held,
                                            ledger=also)}
            expected = [rows["long"], rows["short"]]
    lines = data.draw(lines_of(theirs))

    # Act
    differences = compare(state.positions, view(lines))

    # Assert: the same rows, figures equal as numbers (the report writes them plainly).
    assert [(d.symbol, d.side, d.broker, d.ledger) for d in differences] == [
        (d.symbol, d.side, d.broker, d.ledger) for d in expected]


@pytest.mark.parametrize(("quantity", "shown"), [
    ("12.000", "12"), ("100", "100"), ("1E+2", "100"), ("0.50", "0.5")])
def test_compare_writes_quantities_as_a_person_does(quantity: str, shown: str) -> None:
    # Arrange
    line = BrokerPosition(symbol="KO", side="long", quantity=Decimal(quantity))

    # Act
    [difference] = compare({}, view([line]))

    # Assert
    assert (f"{difference.broker:f}", f"{difference.ledger:f}") == (shown, "0")
