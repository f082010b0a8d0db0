"""Topic names, with the configured prefix.

Pure: creating them is the administrator's (ledger/kafka_admin.py). Must not import the store,
Kafka clients or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Topics:
    """The full names of the ledger's topics."""

    executions: str
    ledger_events: str
    signals: str
    order_intents: str
    dead_letters: str
    broker_positions: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(
            executions=settings.topic("executions"),
            ledger_events=settings.topic("ledger-events"),
            signals=settings.topic("signals"),
            order_intents=settings.topic("order-intents"),
            dead_letters=settings.topic("dead-letters"),
            broker_positions=settings.topic("broker-positions"),
        )

    def all(self) -> list[str]:
        return [self.executions, self.ledger_events, self.signals, self.order_intents,
                self.dead_letters, self.broker_positions]
