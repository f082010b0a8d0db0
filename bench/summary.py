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
    extras = [f"{key}={line[key]}" for key in ("scenario", "events", "store_events")
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


def scaling_png(lines: list[dict[str, Any]], path: Path) -> bool:
    points = sorted((line["events"], line["seconds"]) for line in lines
                    if line["bench"] == "rebuild" and "seconds" in line)
    if len(points) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    axis.loglog(xs, ys, marker="o", label="ledger rebuild")
    axis.loglog(xs, [ys[0] * x / xs[0] for x in xs], linestyle="--", label="linear")
    axis.set_xlabel("events")
    axis.set_ylabel("seconds")
    axis.set_title("rebuild time against store size")
    axis.legend()
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
