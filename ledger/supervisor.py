"""`ledger run all`: every process of the system as child processes, for local use.

Each child is a `ledger run ...` of its own (crash isolation, as in production); one that exits
unexpectedly is started again after a short pause. SIGTERM or SIGINT stops them all: SIGTERM to
each, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field

from ledger.runtime import wait_or_stop

RESTART_PAUSE_S = 1.0
STOP_TIMEOUT_S = 15.0

log = logging.getLogger("ledger.supervisor")


@dataclass(kw_only=True)
class Child:
    name: str
    args: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = field(default=0)
    env: dict[str, str] = field(default_factory=dict)


async def supervise(children: list[Child], stop: asyncio.Event) -> None:
    """Keep every child running until stop is set, then stop them all."""
    try:
        await asyncio.gather(*(_keep_alive(child, stop) for child in children))
    finally:
        await asyncio.gather(*(_terminate(child) for child in children))


async def _keep_alive(child: Child, stop: asyncio.Event) -> None:
    while not stop.is_set():
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ledger", *child.args, env={**os.environ, **child.env})
        log.info("started %s (pid %d)", child.name, child.process.pid)
        waiting = asyncio.ensure_future(child.process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            waiting.cancel()
            return
        log.warning("%s exited with %s; starting it again", child.name, waiting.result())
        child.restarts += 1
        if await wait_or_stop(stop, RESTART_PAUSE_S):
            return


async def _terminate(child: Child) -> None:
    process = child.process
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
