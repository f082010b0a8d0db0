"""Rendering an audit for people: a table of breaches, a terminal chart, a PNG.

The terminal chart shows, per account, open + pending positions and exposure over time against
the limits in force (a column per slice of time, red where over the limit). The PNG
(matplotlib) draws the same with one panel per account and the breach intervals shaded.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ledger.money import money_text
from projections.breaches import AccountAudit, Sample

CHART_WIDTH = 64
_BLOCKS = " ▁▂▃▄▅▆▇█"


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
        if audit.discrepancies:
            table = Table("discrepancy", "sequence", "at", "intent", "fill")
            for found in audit.discrepancies:
                table.add_row(found.kind, f"#{found.sequence}", _when(found.occurred_at),
                              found.intent_id, found.fill_id)
            console.print(table)
        if chart and audit.samples:
            for line in terminal_chart(audit.samples):
                console.print(line)
        console.print()


def by_time(samples: list[Sample]) -> list[Sample]:
    """Return the samples in time order: a stream's times may run backwards (late reports,
    back-dated imports), while a chart's axis may not."""
    return sorted(samples, key=lambda sample: (sample.occurred_at, sample.sequence))


def active(samples: list[Sample]) -> list[Sample]:
    """Drop the quiet lead-in (limits set hours before the first order), keeping one sample."""
    first = next((i for i, s in enumerate(samples) if s.positions or s.exposure), 0)
    return samples[max(0, first - 1):]


def terminal_chart(samples: list[Sample], width: int = CHART_WIDTH) -> list[Text]:
    """Return two rows of block characters: positions and exposure against their limits.

    Nothing to draw (no event in the window) draws nothing.
    """
    if not samples:
        return []
    buckets = _buckets(active(by_time(samples)), width)
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
    return rows


def _buckets(samples: list[Sample], width: int) -> list[list[Sample]]:
    start, end = samples[0].occurred_at, samples[-1].occurred_at
    span = (end - start).total_seconds() or 1.0
    buckets: list[list[Sample]] = [[] for _ in range(width)]
    for sample in samples:
        index = min(width - 1, int((sample.occurred_at - start).total_seconds() / span * width))
        buckets[index].append(sample)
    filled: list[list[Sample]] = []
    for bucket in buckets:
        # An empty slice of time repeats the last figures: nothing changed in it.
        filled.append(bucket if bucket else (filled[-1][-1:] if filled else samples[:1]))
    return filled


def _panel(axis: Any, audit: AccountAudit, title: str, samples: list[Sample],
           values: list[float], limits: list[float | None], gates: set[str]) -> None:
    skipped = len(samples) - len(active(samples))
    times = [s.occurred_at for s in samples][skipped:]
    values, limits = values[skipped:], limits[skipped:]
    axis.step(times, values, where="post", color="#1f77b4", label=title)
    axis.step(times, [limit if limit is not None else float("nan") for limit in limits],
              where="post", color="#d62728", linestyle="--", label="limit")
    for breach in audit.breaches:
        if breach.gate in gates or breach.gate == "trading_halted":
            axis.axvspan(breach.opened_at, breach.closed_at or times[-1], color="#d62728",
                         alpha=0.15)
    axis.set_title(f"{audit.account}: {title}")
    axis.legend(loc="upper left", fontsize=8)
    axis.tick_params(axis="x", labelsize=7, rotation=20)


def write_png(audits: list[AccountAudit], path: Path) -> None:
    """Draw positions and exposure against the limits, one panel per account, breaches shaded."""
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
