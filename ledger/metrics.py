"""Prometheus metrics of the long-running processes (prometheus-client).

`ledger run ...` serves them on 127.0.0.1:LEDGER_METRICS_PORT when that is set (0, the default,
serves nothing); `ledger run all` gives its children consecutive ports from there. Must not be
imported by the pure modules (fold, gates, breaches).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

EVENTS_APPENDED = Counter("ledger_events_appended_total",
                          "Events appended to the store, by process.", ["process"])
EVENTS_PUBLISHED = Counter("ledger_events_published_total",
                           "Events the relay published to ledger-events.")
EVENTS_PROJECTED = Counter("ledger_events_projected_total",
                           "Events the projector applied to the projection tables.")
INTENTS_WITHHELD = Counter("ledger_intents_withheld_total",
                           "Intents the relay kept off order-intents: dead when published "
                           "(expired, released, or the account halted).")
SIGNALS_UNDECIDED = Counter("ledger_signals_undecided_total",
                            "Signals no dispatcher decided within the grace period, dead-lettered "
                            "by the signal watch, by account.", ["account"])
DECISIONS = Counter("ledger_decisions_total",
                    "Dispatcher decisions, by account, outcome and first failed gate.",
                    ["account", "outcome", "gate"])
DEAD_LETTERS = Counter("ledger_dead_letters_total",
                       "Messages refused to dead-letters, by consumer.", ["consumer"])
DISCREPANCIES = Counter("ledger_discrepancies_total",
                        "Executions the broker reported that the ledger cannot reconcile "
                        "(DiscrepancyFound), by account.", ["account"])
PROJECTION_LAG = Gauge("ledger_projection_lag_events",
                       "Events appended but not yet in the projection, by account.", ["account"])

METRICS_HOST = "127.0.0.1"


def serve(port: int) -> None:
    """Serve the metrics over HTTP on loopback; port 0 serves nothing."""
    if port:
        start_http_server(port, addr=METRICS_HOST)
