"""`ledger run all`: every process of the system as child processes, for local use.

Each child is a `ledger run ...` of its own (crash isolation, as in production); one that exits
unexpectedly is started again after a short pause. SIGTERM or SIGINT stops them all: SIGTERM to
each, a bounded wait, then SIGKILL. Children never outlive the supervisor: each asks the kernel
(PR_SET_PDEATHSIG) to be killed when its parent dies, so a supervisor killed with -9 leaves no
orphans, and the next one starts from nothing. Every process is crash-only, so a child killed
this way loses nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger import metrics
from ledger.runtime import wait_or_stop

RESTART_PAUSE_S = 1.0
STOP_TIMEOUT_S = 15.0
# linux/prctl.h
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("console.supervisor")


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
    # Present from the start at 0, so that a first restart is an increase a rule can see.
    restarts = metrics.RESTARTS.labels(child.name)
    up = metrics.CHILD_UP.labels(child.name)
    while not stop.is_set():
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", *child.args, env={**os.environ, **child.env},
            preexec_fn=_die_with_parent(os.getpid()))
        up.set(1)
        log.info("started %s (pid %d)", child.name, child.process.pid)
        waiting = asyncio.ensure_future(child.process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            waiting.cancel()
            return
        up.set(0)
        log.warning("%s exited with %s; starting it again", child.name, waiting.result())
        child.restarts += 1
        restarts.inc()
        if await wait_or_stop(stop, RESTART_PAUSE_S):
            return


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Return what a child runs before it execs: be killed when the supervisor dies."""
    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(1)
        # The supervisor may have died between the fork and the prctl.
        if os.getppid() != parent:
            os._exit(1)

    return arrange


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
