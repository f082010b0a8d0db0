"""What every long-running process shares: stop on SIGTERM/SIGINT, retry on operating errors.

Crash-only: a process keeps no state that lives only in memory, so a restart after a failure runs
the same path as a normal start-up. Every error is one of two kinds:

- operating errors (`OPERATING_ERRORS`: the database or the broker unreachable, restarting,
  overloaded, a transaction to retry): the infrastructure's; the work is retried after a bounded
  backoff and nothing is committed meanwhile;
- anything else raised while handling one message: that message's; a consumer dead-letters the
  message with `one_line(exc)` as the reason and goes on. It never loops on it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path

import asyncpg
from aiokafka.errors import KafkaError

from ledger.errors import LedgerError, StoreUnavailable

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
    # 57xxx: shutting down, starting up, a statement cancelled by the server.
    asyncpg.exceptions.OperatorInterventionError,
    # 40xxx: serialisation failures and deadlocks, to be retried by definition.
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.LockNotAvailableError,
    KafkaError,
    StoreUnavailable,
)
REASON_LENGTH_MAX = 500


def one_line(exc: BaseException) -> str:
    """Return an error as one line: a ledger error's own message, else its class and text."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, LedgerError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:REASON_LENGTH_MAX]

log = logging.getLogger("ledger")


# The project's own packages: their lines are the console's; every other logger's go to the log.
OWN_LOGGERS = ("ledger", "services", "projections", "dispatcher", "console", "demo", "bench")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
LOG_FILE_BYTES_MAX = 10 * 1024 * 1024
LOG_FILES_KEPT = 3


class _Own(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


def configure_logging(log_file: Path | None = None) -> None:
    """Log the project's own lines to stderr, and everything, libraries included, to log_file.

    A library's warnings (aiokafka's reconnect tracebacks, a group coordinator that moved) are
    for whoever digs in later, not for the console where an operator reads the ledger's own
    lines. Without a log file, libraries log warnings and worse to stderr as well.
    """
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root.addHandler(console)
    if log_file is None:
        console.addFilter(_LibraryWarnings())
        return
    console.addFilter(_Own())
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = RotatingFileHandler(log_file, maxBytes=LOG_FILE_BYTES_MAX,
                                  backupCount=LOG_FILES_KEPT, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(to_file)


class _LibraryWarnings(_Own):
    def filter(self, record: logging.LogRecord) -> bool:
        return super().filter(record) or record.levelno >= logging.WARNING


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
