"""Summarise a `make bench` run: a Markdown table and a PNG of the scaling curves, in bench/out/.

Reads the BENCH lines that the benchmarks appended to bench/out/results.jsonl during the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import OUT_DIR


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _label(line: dict[str, Any]) -> str:
    extras = [f"{key}={line[key]}" for key in ("scenario", "events", "accounts", "store_events")
              if key in line]
    return f"{line['bench']} ({', '.join(extras)})" if extras else str(line["bench"])


def table(lines: list[dict[str, Any]]) -> str:
    rows = ["| benchmark | value | baseline | ratio | notes |", "| --- | --- | --- | --- | --- |"]
    for line in lines:
        notes = ", ".join(f"{key} {line[key]}" for key in ("p50_ms", "p99_ms", "peak_rss_mib",
                                                           "wal_bytes", "seconds")
                          if key in line)
        rows.append(f"| {_label(line)} | {line['value']:,} {line['unit']} | "
                    f"{line['baseline']}: {line['baseline_value']:,} | {line['ratio']} | "
                    f"{notes} |")
    return "\n".join(rows) + "\n"


SCALED = ("import", "rebuild", "audit")


def scaling_png(lines: list[dict[str, Any]], path: Path) -> bool:
    """Seconds against events, one line per command and account count, on log-log axes."""
    curves: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for line in lines:
        if line["bench"] in SCALED and "seconds" in line and "accounts" in line:
            curves.setdefault((line["bench"], line["accounts"]), []).append(
                (line["events"], line["seconds"]))
    curves = {key: sorted(points) for key, points in curves.items() if len(points) >= 2}
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SCALED), figsize=(13, 4), sharey=True)
    for axis, name in zip(axes, SCALED, strict=True):
        for (bench, accounts), points in sorted(curves.items()):
            if bench != name:
                continue
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            axis.loglog(xs, ys, marker="o", label=f"{accounts} accounts")
            axis.loglog(xs, [ys[-1] * x / xs[-1] for x in xs], linestyle=":", color="grey")
        axis.set_xlabel("events")
        axis.set_title(f"ledger {name}")
        axis.legend(fontsize="small")
    axes[0].set_ylabel("seconds (dotted: linear through the largest)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write(out_dir: Path = OUT_DIR) -> Path:
    lines = load(out_dir / "results.jsonl")
    summary = out_dir / "summary.md"
    summary.write_text(table(lines))
    scaling_png(lines, out_dir / "scaling.png")
    return summary
