"""What every long-running process shares: stop on SIGTERM/SIGINT, retry on operating errors.

Crash-only: a process keeps no state that lives only in memory, so a restart after a failure runs
the same path as a normal start-up. Operating errors (database or broker unreachable) end the
current attempt, are logged as one line, and the attempt starts again after a bounded backoff;
programmer errors are not caught here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka.errors import KafkaError

from ledger.errors import StoreUnavailable

# Decoding a batch allocates a few objects per field of every event, none of them in cycles;
# with the default threshold (700) the collector ran every few events and walked the whole heap
# at each older-generation pass: about a fifth of the projector's time (py-spy, issue 9).
GC_YOUNG_THRESHOLD = 50_000

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0

OPERATING_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    KafkaError,
    StoreUnavailable,
)

log = logging.getLogger("ledger")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # aiokafka logs every reconnect attempt at ERROR with a traceback; our own line suffices.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def tune_gc() -> None:
    """Collect cycles less often, and never walk what start-up (imports, settings) allocated."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def stop_event_on_signals() -> asyncio.Event:
    """Return an event set by the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def wait_or_stop(stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to timeout_s; return True when stop was set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout_s)
    except TimeoutError:
        return False
    return True


async def keep_running(name: str, stop: asyncio.Event,
                       attempt: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `attempt` until stop is set, starting it again after each operating error."""
    backoff_s = BACKOFF_INITIAL_S
    while not stop.is_set():
        try:
            await attempt(stop)
            backoff_s = BACKOFF_INITIAL_S
        except OPERATING_ERRORS as exc:
            log.warning("%s: %s: %s; retrying in %.1fs", name, type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "", backoff_s)
            if await wait_or_stop(stop, backoff_s):
                return
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
