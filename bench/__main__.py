"""Run the benchmarks: `python -m bench [--quick] [--only NAME[,NAME]]` (what `make bench` does)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench import (
    bench_append,
    bench_decide,
    bench_e2e,
    bench_pipeline,
    bench_projections,
    bench_scale,
    summary,
)
from bench.common import OUT_DIR, commit
from ledger.runtime import tune_gc

# The benchmarks by the name `make bench ONLY=name[,name]` selects them with, in running order.
BENCHMARKS: dict[str, Callable[[bool], Coroutine[Any, Any, None]]] = {
    "append": bench_append.run,
    "relay": lambda quick: bench_pipeline.run(quick, ("relay",)),
    "ingest": lambda quick: bench_pipeline.run(quick, ("ingest",)),
    "projector": bench_projections.run,
    "scale": bench_scale.run,
    "decide": bench_decide.run,
    "e2e": bench_e2e.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the benchmarks against the local stack.")
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, a few minutes.")
    parser.add_argument("--only", default="", metavar="NAME[,NAME]",
                        help=f"Run only these: {', '.join(BENCHMARKS)} (default: all).")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown benchmark {', '.join(unknown)}: expected some of "
                     f"{', '.join(BENCHMARKS)}")
    # As every `ledger` command does: the in-process benchmarks measure the services' settings.
    tune_gc()
    print(f"# machine: {platform.platform()} cpus={os.cpu_count()} commit={commit()}", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.jsonl").unlink(missing_ok=True)
    both = {"relay", "ingest"} <= set(chosen)
    for name in BENCHMARKS:
        if name not in chosen or (both and name == "ingest"):
            continue
        started = time.monotonic()
        if both and name == "relay":
            # One prepared store serves both, as they always ran.
            asyncio.run(bench_pipeline.run(args.quick, ("relay", "ingest")))
        else:
            asyncio.run(BENCHMARKS[name](args.quick))
        print(f"# {name if not (both and name == 'relay') else 'relay+ingest'}: "
              f"{time.monotonic() - started:.0f} s", flush=True)
    print(f"# summary: {summary.write()}", flush=True)


if __name__ == "__main__":
    main()
