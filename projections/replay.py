"""Spread independent per-account work over worker processes (rebuild, verify, audit).

Decoding and folding are CPU-bound Python, and accounts are independent (no transaction spans
two), so whole accounts go to worker processes, one chunk at a time. Workers are spawned, never
forked: the parent runs an event loop. Must not import the CLI.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import Callable, Sequence
from typing import TypeVar

from ledger.runtime import tune_gc

# Work handed to one worker at a time: enough events to dwarf its start-up and connection.
CHUNK_EVENTS = 50_000
JOBS_MAX = 8

T = TypeVar("T")


def chunks(targets: Sequence[tuple[str, int]],
           chunk_events: int = CHUNK_EVENTS) -> list[list[str]]:
    """Group accounts (with their heads) into chunks of about chunk_events events each."""
    grouped: list[list[str]] = []
    size = chunk_events
    for account, head in sorted(targets, key=lambda target: -target[1]):
        if size >= chunk_events:
            grouped.append([])
            size = 0
        grouped[-1].append(account)
        size += max(head, 1)
    return grouped


async def run_chunks(work: Callable[[list[str]], T], targets: Sequence[tuple[str, int]],
                     jobs: int, done: Callable[[list[str], T], None]) -> None:
    """Run `work(chunk)` for every chunk of accounts in `jobs` processes; report each result."""
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                initializer=tune_gc) as pool:
        running = {asyncio.ensure_future(loop.run_in_executor(pool, work, chunk)): chunk
                   for chunk in chunks(targets)}
        waiting = set(running)
        while waiting:
            finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in finished:
                done(running[future], future.result())
