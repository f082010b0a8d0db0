"""Run every benchmark: `python -m bench [--quick]` (what `make bench` does)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform

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


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every benchmark against the local stack.")
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, a few minutes.")
    args = parser.parse_args()
    # As every `ledger` command does: the in-process benchmarks measure the services' settings.
    tune_gc()
    print(f"# machine: {platform.platform()} cpus={os.cpu_count()} commit={commit()}", flush=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.jsonl").unlink(missing_ok=True)
    asyncio.run(bench_append.run(args.quick))
    asyncio.run(bench_pipeline.run(args.quick))
    asyncio.run(bench_projections.run(args.quick))
    asyncio.run(bench_scale.run(args.quick))
    asyncio.run(bench_decide.run(args.quick))
    asyncio.run(bench_e2e.run(args.quick))
    print(f"# summary: {summary.write()}", flush=True)


if __name__ == "__main__":
    main()
