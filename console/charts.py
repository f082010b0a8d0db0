"""Rendering an audit for people: tables of breaches, reconciliations and discrepancies, a
terminal chart, a PNG.

The terminal chart shows, per account, open + pending positions and exposure over time against
the limits in force (a column per slice of time, red where over the limit), and a row of marks
where the broker was compared with the ledger: a reconciliation that matched (`✓`, green), one
that failed (`✗`, red), a discrepancy (`!`, red). The PNG (matplotlib) draws the same with one
panel per account, the breach intervals shaded and the marks as vertical lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ledger.events import format_decimal
from ledger.money import money_text
from projections.breaches import FINDINGS_MAX, AccountAudit, Discrepancy, Reconciliation, Sample

CHART_WIDTH = 64
_BLOCKS = " ▁▂▃▄▅▆▇█"
# The marks of the terminal chart, worst last: a column shows the worst mark in it.
_MATCHED, _FAILED, _DISCREPANCY = 1, 2, 3
_MARKS = {_MATCHED: ("✓", "green"), _FAILED: ("✗", "red"), _DISCREPANCY: ("!", "bold red")}
# Differences shown per failed reconciliation in the table; the JSON has them all.
_DIFFERENCES_SHOWN = 3


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "still open"


def print_audit(audits: list[AccountAudit], console: Console, *, chart: bool = True) -> None:
    """Print each account's summary, its breaches and (optionally) a terminal chart."""
    for audit in audits:
        verdict = (Text(f"{len(audit.breaches)} breaches", style="bold red") if audit.breaches
                   else Text("no breach", style="bold green"))
        console.print(Text.assemble(
            (audit.account, "bold"), f"  {audit.events} events, peak {audit.peak_open_positions}"
            f" positions (open + pending), peak exposure {money_text(audit.peak_exposure)}  ",
            verdict))
        if audit.breaches:
            table = Table("gate", "limit", "peak", "from", "to", "first event")
            for breach in audit.breaches:
                money = breach.gate not in ("max_open_positions", "trading_halted")
                show = money_text if money else (lambda value: f"{value:f}")
                table.add_row(breach.gate, show(breach.limit), show(breach.peak),
                              _when(breach.opened_at), _when(breach.closed_at),
                              f"#{breach.first_sequence}")
            console.print(table)
        _print_reconciliations(audit, console)
        _print_discrepancies(audit, console)
        if chart and audit.samples:
            for line in terminal_chart(audit.samples, reconciliations=audit.reconciliations,
                                       discrepancies=audit.discrepancies):
                console.print(line)
        console.print()


def _print_reconciliations(audit: AccountAudit, console: Console) -> None:
    """A row per failed reconciliation, and one per run of reconciliations that matched."""
    if not audit.reconciliations:
        return
    table = Table("reconciliation", "sequence", "at", "broker as of", "head", "differences")
    for run in _runs(audit.reconciliations):
        first, last = run[0], run[-1]
        if last.matched:
            outcome = Text("matched" if len(run) == 1 else f"matched x{len(run)}", style="green")
        else:
            outcome = Text("failed", style="bold red")
        sequences = f"#{first.sequence}" if len(run) == 1 else f"#{first.sequence}-#{last.sequence}"
        at = (_when(first.occurred_at) if len(run) == 1
              else f"{_when(first.occurred_at)} to {_when(last.occurred_at)}")
        table.add_row(outcome, sequences, at, _when(last.as_of), f"#{last.head}",
                      _differences_text(last))
    console.print(table)
    if audit.reconciliations_omitted:
        console.print(f"and {audit.reconciliations_omitted} more reconciliations, not listed "
                      f"(the audit keeps the window's first {FINDINGS_MAX})")


def _runs(reconciliations: Sequence[Reconciliation]) -> list[list[Reconciliation]]:
    """Group consecutive reconciliations that matched; each failed one is a run of its own."""
    runs: list[list[Reconciliation]] = []
    for reconciliation in reconciliations:
        if runs and reconciliation.matched and runs[-1][-1].matched:
            runs[-1].append(reconciliation)
        else:
            runs.append([reconciliation])
    return runs


def _differences_text(reconciliation: Reconciliation) -> str:
    shown = [f"{d.symbol} {d.side}: broker {format_decimal(d.broker)}, "
             f"ledger {format_decimal(d.ledger)}"
             for d in reconciliation.differences[:_DIFFERENCES_SHOWN]]
    more = len(reconciliation.differences) - len(shown)
    if more > 0:
        shown.append(f"{more} more")
    return "; ".join(shown)


def _print_discrepancies(audit: AccountAudit, console: Console) -> None:
    if not audit.discrepancies:
        return
    table = Table("discrepancy", "sequence", "at", "reason", "recorded")
    for found in audit.discrepancies:
        table.add_row(Text(found.kind, style="red"), f"#{found.sequence}",
                      _when(found.occurred_at), found.reason, "yes" if found.recorded else "no")
    console.print(table)
    if audit.discrepancies_omitted:
        console.print(f"and {audit.discrepancies_omitted} more discrepancies, not listed "
                      f"(the audit keeps the window's first {FINDINGS_MAX})")


def by_time(samples: list[Sample]) -> list[Sample]:
    """Return the samples in time order: a stream's times may run backwards (late reports,
    back-dated imports), while a chart's axis may not."""
    return sorted(samples, key=lambda sample: (sample.occurred_at, sample.sequence))


def active(samples: list[Sample], alarm: datetime | None = None) -> list[Sample]:
    """Drop the quiet lead-in (limits set hours before the first order), keeping one sample.

    alarm: the time of the first failed reconciliation or discrepancy, if any: from there on
    nothing is quiet (the broker may hold what the ledger does not).
    """
    first = next((i for i, s in enumerate(samples) if s.positions or s.exposure
                  or (alarm is not None and s.occurred_at >= alarm)), 0)
    return samples[max(0, first - 1):]


def marks(reconciliations: Sequence[Reconciliation],
          discrepancies: Sequence[Discrepancy]) -> list[tuple[datetime, int]]:
    """Return the chart's marks in time order: (time, _MATCHED, _FAILED or _DISCREPANCY)."""
    found = [(r.occurred_at, _MATCHED if r.matched else _FAILED) for r in reconciliations]
    found += [(d.occurred_at, _DISCREPANCY) for d in discrepancies]
    return sorted(found)


def _alarm(found: list[tuple[datetime, int]]) -> datetime | None:
    return next((at for at, mark in found if mark != _MATCHED), None)


def terminal_chart(samples: list[Sample], width: int = CHART_WIDTH, *,
                   reconciliations: Sequence[Reconciliation] = (),
                   discrepancies: Sequence[Discrepancy] = ()) -> list[Text]:
    """Return two rows of block characters: positions and exposure against their limits; and a
    third marking, per column, the worst of the reconciliations and discrepancies in it (only
    when there are any).

    Nothing to draw (no event in the window) draws nothing. A reconciliation that matched
    during the quiet lead-in the chart leaves out is not marked.
    """
    if not samples:
        return []
    found = marks(reconciliations, discrepancies)
    shown = active(by_time(samples), _alarm(found))
    buckets = _buckets(shown, width)
    rows = []
    for label, value_of, limit_of, fmt in (
        ("positions", lambda s: Decimal(s.positions),
         lambda s: Decimal(s.max_open_positions) if s.max_open_positions is not None else None,
         lambda v: f"{v:f}"),
        ("exposure ", lambda s: s.exposure, lambda s: s.max_exposure, money_text),
    ):
        peaks = [max(value_of(s) for s in bucket) for bucket in buckets]
        limits = [limit_of(bucket[-1]) for bucket in buckets]
        top = max([*peaks, *(limit for limit in limits if limit is not None), Decimal(1)])
        text = Text(f"{label} ")
        for peak, limit in zip(peaks, limits, strict=True):
            level = int((peak / top) * (len(_BLOCKS) - 1)) if top else 0
            over = limit is not None and peak > limit
            text.append(_BLOCKS[level], style="red" if over else "green")
        limit_text = fmt(limits[-1]) if limits[-1] is not None else "none"
        text.append(f"  peak {fmt(max(peaks))}, limit {limit_text}")
        rows.append(text)
    if found:
        rows.append(_marks_row(found, shown, width))
    return rows


def _marks_row(found: list[tuple[datetime, int]], shown: list[Sample], width: int) -> Text:
    start, end = shown[0].occurred_at, shown[-1].occurred_at
    columns = [0] * width
    for at, mark in found:
        if mark == _MATCHED and at < start:
            continue
        index = _column(at, start, end, width)
        columns[index] = max(columns[index], mark)
    text = Text("marks     ")
    for mark in columns:
        if mark:
            symbol, style = _MARKS[mark]
            text.append(symbol, style=style)
        else:
            text.append(" ")
    counts = [sum(1 for _, mark in found if mark == kind) for kind in _MARKS]
    text.append(f"  ✓ {counts[0]} matched, ✗ {counts[1]} failed, ! {counts[2]} discrepancies")
    return text


def _column(at: datetime, start: datetime, end: datetime, width: int) -> int:
    """Return the column of a moment: where it falls between start and end (clamped)."""
    span = (end - start).total_seconds() or 1.0
    return max(0, min(width - 1, int((at - start).total_seconds() / span * width)))


def _buckets(samples: list[Sample], width: int) -> list[list[Sample]]:
    start, end = samples[0].occurred_at, samples[-1].occurred_at
    buckets: list[list[Sample]] = [[] for _ in range(width)]
    for sample in samples:
        buckets[_column(sample.occurred_at, start, end, width)].append(sample)
    filled: list[list[Sample]] = []
    for bucket in buckets:
        # An empty slice of time repeats the last figures: nothing changed in it.
        filled.append(bucket if bucket else (filled[-1][-1:] if filled else samples[:1]))
    return filled


# How the PNG draws each mark: a vertical line across the panel.
_LINES = {
    _MATCHED: {"color": "#2ca02c", "linestyle": ":", "linewidth": 0.8, "label": "reconciled"},
    _FAILED: {"color": "#d62728", "linestyle": "-", "linewidth": 1.2,
              "label": "reconciliation failed"},
    _DISCREPANCY: {"color": "#ff7f0e", "linestyle": "--", "linewidth": 1.2,
                   "label": "discrepancy"},
}


def _panel(axis: Any, audit: AccountAudit, title: str, samples: list[Sample],
           values: list[float], limits: list[float | None], gates: set[str]) -> None:
    found = marks(audit.reconciliations, audit.discrepancies)
    skipped = len(samples) - len(active(samples, _alarm(found)))
    times = [s.occurred_at for s in samples][skipped:]
    values, limits = values[skipped:], limits[skipped:]
    axis.step(times, values, where="post", color="#1f77b4", label=title)
    axis.step(times, [limit if limit is not None else float("nan") for limit in limits],
              where="post", color="#d62728", linestyle="--", label="limit")
    for breach in audit.breaches:
        if breach.gate in gates or breach.gate == "trading_halted":
            axis.axvspan(breach.opened_at, breach.closed_at or times[-1], color="#d62728",
                         alpha=0.15)
    for kind, line in _LINES.items():
        # As the terminal chart: a match during the quiet lead-in left out is not drawn.
        at = [moment for moment, mark in found
              if mark == kind and (kind != _MATCHED or moment >= times[0])]
        if at:
            axis.vlines(at, 0, 1, transform=axis.get_xaxis_transform(), **line)
    axis.set_title(f"{audit.account}: {title}")
    axis.legend(loc="upper left", fontsize=8)
    axis.tick_params(axis="x", labelsize=7, rotation=20)


def write_png(audits: list[AccountAudit], path: Path) -> None:
    """Draw positions and exposure against the limits, one panel per account, breaches shaded,
    reconciliations and discrepancies marked by vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [audit for audit in audits if audit.samples]
    figure, axes = plt.subplots(len(shown) or 1, 2, figsize=(13, 3.2 * max(1, len(shown))),
                                squeeze=False)
    for row, audit in enumerate(shown):
        samples = by_time(audit.samples)
        _panel(axes[row][0], audit, "open + pending positions", samples,
               [float(s.positions) for s in samples],
               [float(s.max_open_positions) if s.max_open_positions is not None else None
                for s in samples], {"max_open_positions"})
        _panel(axes[row][1], audit, "exposure ($)", samples,
               [float(s.exposure) for s in samples],
               [float(s.max_exposure) if s.max_exposure is not None else None
                for s in samples], {"max_exposure", "max_order_notional"})
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
