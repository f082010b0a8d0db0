"""Goal: the audit's rendering for people marks reconciliations and discrepancies: the terminal
chart adds a row of marks at their times (the worst mark of a column wins, a match during the
quiet lead-in is left out, an alarm in it is not quiet), the PNG draws them as vertical lines, and
the text output lists them (runs of matches collapsed, each failure with its differences, each
discrepancy with its reason and whether it is recorded, what the bounds left out counted).

Method: samples, reconciliations and discrepancies built as the audit returns them, a few minutes
apart, charted 8 columns wide (a column per minute); the text through a recording rich Console;
the PNG panel on a real matplotlib Axes. Arrange/Act/Assert, no I/O but a temporary file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection
from rich.console import Console

from console import charts
from console.charts import print_audit, terminal_chart, write_png
from ledger.events import Difference
from projections.breaches import FINDINGS_MAX, AccountAudit, Discrepancy, Reconciliation, Sample


def minute(value: float) -> datetime:
    """Return 17:00 plus value minutes on 2026-02-03."""
    seconds = int(value * 60)
    return datetime(2026, 2, 3, 17, seconds // 60, seconds % 60, tzinfo=UTC)


def sample(sequence: int, at: float, positions: int = 1) -> Sample:
    return Sample(sequence=sequence, occurred_at=minute(at), positions=positions,
                  exposure=Decimal(100 * positions), max_open_positions=5,
                  max_exposure=Decimal("1000"), halted=False)


def reconciliation(sequence: int, at: float, *, matched: bool = True,
                   differences: tuple[Difference, ...] = ()) -> Reconciliation:
    return Reconciliation(sequence=sequence, occurred_at=minute(at), as_of=minute(at - 0.5),
                          head=sequence - 1, matched=matched, differences=differences)


def discrepancy(sequence: int, at: float, *, recorded: bool = False) -> Discrepancy:
    return Discrepancy(
        kind="close_beyond_open", sequence=sequence, occurred_at=minute(at),
        execution='PositionClosed:close_id="C-1"', position_id="P-1", intent_id=None,
        fill_id=None, close_id="C-1", reported=Decimal("5"), ledger=Decimal("2"),
        reason="close C-1 of 5 on position P-1, where 2 are open", recorded=recorded)


def differences(count: int) -> tuple[Difference, ...]:
    return tuple(Difference(symbol=f"SYM{n}", side="long", broker=Decimal(n + 1),
                            ledger=Decimal("0.5")) for n in range(count))


def audit_of(samples: list[Sample], reconciliations: list[Reconciliation],
             discrepancies: list[Discrepancy], **omitted: int) -> AccountAudit:
    return AccountAudit(account="large", events=len(samples), peak_open_positions=1,
                        peak_exposure=Decimal(100), breaches=[], samples=samples,
                        reconciliations=reconciliations, discrepancies=discrepancies, **omitted)


# A sample per minute from 17:00 to 17:08, one position open throughout.
SAMPLES = [sample(n + 1, n) for n in range(9)]

# --- The terminal chart -----------------------------------------------------------------------


def test_terminal_chart_when_nothing_was_reconciled_or_found_draws_two_rows() -> None:
    # Act
    rows = terminal_chart(SAMPLES, 8)

    # Assert
    assert [row.plain[:10] for row in rows] == ["positions ", "exposure  "]


def test_terminal_chart_marks_each_column_with_its_worst_mark_and_counts_them() -> None:
    # Arrange: a match at 17:01; in the minute of 17:03 a discrepancy, then a failure; a match
    # at 17:08.
    reconciliations = [reconciliation(2, 1), reconciliation(5, 3.5, matched=False,
                                                           differences=differences(1)),
                       reconciliation(9, 8)]
    discrepancies = [discrepancy(4, 3)]

    # Act
    rows = terminal_chart(SAMPLES, 8, reconciliations=reconciliations,
                          discrepancies=discrepancies)

    # Assert
    assert len(rows) == 3
    assert rows[2].plain == ("marks      ✓ !   ✓  ✓ 2 matched, ✗ 1 failed, ! 1 discrepancies")
    marked = {span.start - 10: span.style for span in rows[2].spans if span.end - span.start == 1}
    assert marked == {1: "green", 3: "bold red", 7: "green"}


def test_terminal_chart_when_only_failures_shows_the_failed_mark_in_red() -> None:
    # Act
    rows = terminal_chart(SAMPLES, 8, reconciliations=[reconciliation(6, 5, matched=False)])

    # Assert
    assert rows[2].plain == "marks          ✗    ✓ 0 matched, ✗ 1 failed, ! 0 discrepancies"
    assert [(span.start - 10, span.style) for span in rows[2].spans
            if span.end - span.start == 1] == [(5, "red")]


def test_terminal_chart_leaves_a_match_in_the_quiet_lead_in_out_but_not_a_failure() -> None:
    # Arrange: nothing open until 17:04 (the chart starts at 17:03, one sample before).
    quiet = [sample(n + 1, n, positions=0 if n < 4 else 1) for n in range(9)]
    matched_early = [reconciliation(2, 1)]
    failed_early = [reconciliation(2, 1, matched=False)]

    # Act
    without_alarm = terminal_chart(quiet, 8, reconciliations=matched_early)
    with_alarm = terminal_chart(quiet, 8, reconciliations=failed_early)

    # Assert: the failure at 17:01 makes the chart start at 17:00, a column per minute again.
    assert without_alarm[2].plain[:18] == "marks             "
    assert with_alarm[2].plain[:18] == "marks      ✗      "
    assert with_alarm[0].plain[:18] == "positions     ▁▁▁▁"


# --- The text output --------------------------------------------------------------------------


def test_print_audit_lists_reconciliations_with_matches_collapsed_and_each_discrepancy() -> None:
    # Arrange: two matches, a failure with four differences, a match; two discrepancies, one
    # recorded; some of each left out by the bounds.
    result = audit_of(
        SAMPLES,
        [reconciliation(2, 1), reconciliation(3, 2),
         reconciliation(5, 4, matched=False, differences=differences(4)), reconciliation(7, 6)],
        [discrepancy(4, 3, recorded=True), discrepancy(6, 5)],
        reconciliations_omitted=3, discrepancies_omitted=1)
    console = Console(record=True, width=300)

    # Act
    print_audit([result], console, chart=False)

    # Assert
    lines = [" ".join(line.replace("│", " ").split())
             for line in console.export_text().splitlines()]
    assert "matched x2 #2-#3 2026-02-03 17:01:00 to 2026-02-03 17:02:00 2026-02-03 17:01:30 #2" \
        in lines
    assert ("failed #5 2026-02-03 17:04:00 2026-02-03 17:03:30 #4 SYM0 long: broker 1, ledger "
            "0.5; SYM1 long: broker 2, ledger 0.5; SYM2 long: broker 3, ledger 0.5; 1 more") \
        in lines
    assert "matched #7 2026-02-03 17:06:00 2026-02-03 17:05:30 #6" in lines
    assert (f"and 3 more reconciliations, not listed (the audit keeps the window's first "
            f"{FINDINGS_MAX})") in lines
    assert ("close_beyond_open #4 2026-02-03 17:03:00 close C-1 of 5 on position P-1, where 2 "
            "are open yes") in lines
    assert ("close_beyond_open #6 2026-02-03 17:05:00 close C-1 of 5 on position P-1, where 2 "
            "are open no") in lines
    assert (f"and 1 more discrepancies, not listed (the audit keeps the window's first "
            f"{FINDINGS_MAX})") in lines


def test_print_audit_when_nothing_reconciled_or_found_prints_no_such_table() -> None:
    # Arrange
    console = Console(record=True, width=200)

    # Act
    print_audit([audit_of(SAMPLES, [], [])], console)

    # Assert
    text = console.export_text()
    assert "reconciliation" not in text
    assert "discrepancy" not in text
    assert "marks" not in text


# --- The PNG ----------------------------------------------------------------------------------


def test_png_panel_draws_a_vertical_line_per_mark_with_its_legend() -> None:
    # Arrange
    result = audit_of(SAMPLES, [reconciliation(2, 1), reconciliation(4, 3, matched=False),
                                reconciliation(9, 8)], [discrepancy(5, 3.5)])
    figure, axis = plt.subplots()

    # Act
    charts._panel(axis, result, "positions", SAMPLES, [1.0] * 9, [5.0] * 9,
                  {"max_open_positions"})

    # Assert
    drawn: dict[str, int] = {}
    for collection in axis.collections:
        assert isinstance(collection, LineCollection)
        drawn[str(collection.get_label())] = len(collection.get_segments())
    plt.close(figure)
    assert drawn == {"reconciled": 2, "reconciliation failed": 1, "discrepancy": 1}


def test_write_png_when_marks_writes_a_png(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "audit.png"
    result = audit_of(SAMPLES, [reconciliation(4, 3, matched=False)], [discrepancy(5, 3.5)])

    # Act
    write_png([result], path)

    # Assert
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
