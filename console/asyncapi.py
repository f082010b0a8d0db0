"""The AsyncAPI description of the ledger's Kafka interface, from the processes' own wiring.

The brokers are built exactly as the processes build them (same subscribers, publishers, titles
and descriptions) but never started, so the document cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Sequence

from faststream.specification import AsyncAPI

from ledger.errors import LedgerError
from ledger.events import Event
from ledger.settings import Settings
from ledger.topics import Topics
from services import ingest


async def _never_called(account: str, events: Sequence[Event]) -> ingest.Recorded:
    raise LedgerError("the AsyncAPI description's brokers are never started")


def describe(settings: Settings) -> str:
    """Return the AsyncAPI 3.0 document, as JSON."""
    topics = Topics.from_settings(settings)
    brokers = [ingest.build_broker(settings, topics, _never_called, ingest.IngestCounters())]
    return AsyncAPI(
        *brokers, title="Position ledger", version="0.1.0",
        description="Kafka distributes, PostgreSQL decides: executions in, committed ledger "
                    "events and order intents out, every refused message in dead-letters.",
    ).to_specification().to_json()
