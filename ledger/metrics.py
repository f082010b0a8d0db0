"""Prometheus metrics of the long-running processes (prometheus-client).

`ledger run ...` serves them on LEDGER_METRICS_HOST:LEDGER_METRICS_PORT when the port is set (0,
the default, serves nothing); `ledger run all` serves the supervisor's own metrics there and
gives its children consecutive ports after it. Every label is bounded by the number of accounts
(or of processes, consumers, gates, limits and states): never a symbol, an id or a sequence.
docs/metrics.md lists them; tests/unit/test_metrics_catalogue.py keeps that list and this module
equal, and the alert rules and the dashboard within it. Must not be imported by the pure modules
(fold, gates, breaches).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Counters, by the process that counts.
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

# Lag: how far a process is behind the store's heads.
PROJECTION_LAG = Gauge("ledger_projection_lag_events",
                       "Events appended but not yet in the projection, by account.", ["account"])
RELAY_LAG = Gauge("ledger_relay_lag_events",
                  "Events appended but not yet published to ledger-events (head - published), "
                  "by account.", ["account"])

# The book per account, as the projector's fold has it (projections/account_metrics.py).
OPEN_POSITIONS = Gauge("ledger_account_open_positions", "Open positions, by account.",
                       ["account"])
PENDING_INTENTS = Gauge("ledger_account_pending_intents",
                        "Pending intents (issued, not yet filled, expired, rejected or "
                        "cancelled), reducing ones included, by account.", ["account"])
POSITIONS_COUNTED = Gauge("ledger_account_positions_counted",
                          "What the max_open_positions gate counts: open positions plus the "
                          "pending intents that would open one, by account.", ["account"])
OPEN_EXPOSURE = Gauge("ledger_account_open_exposure_dollars",
                      "Notional of the open positions, by account.", ["account"])
PENDING_EXPOSURE = Gauge("ledger_account_pending_exposure_dollars",
                         "Notional the pending opening intents reserve, by account.", ["account"])
EXPOSURE = Gauge("ledger_account_exposure_dollars",
                 "Open plus pending exposure: what the max_exposure gate counts, by account.",
                 ["account"])
LIMIT = Gauge("ledger_account_limit",
              "Each limit in force, by account and limit name (absent: not set).",
              ["account", "limit"])
TRADING_STATE = Gauge("ledger_account_trading_state",
                      "1 for the account's trading state (active, reducing or halted), 0 for "
                      "the others.", ["account", "state"])
SINCE_DECISION = Gauge("ledger_account_seconds_since_last_decision",
                       "Seconds since the account's last SignalEvaluated (+Inf: never).",
                       ["account"])
SINCE_RECONCILIATION = Gauge("ledger_account_seconds_since_reconciliation",
                             "Seconds since the broker snapshot of the account's last "
                             "PositionsReconciled was taken (+Inf: never reconciled).",
                             ["account"])
RECONCILIATION_FAILED = Gauge("ledger_account_reconciliation_failed",
                              "1 when the account's latest reconciliation with the broker "
                              "failed (ReconciliationFailed), else 0.", ["account"])

# Latency. Buckets from a millisecond (a decision on a warm cache) to ten seconds (an outage).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DECISION_SECONDS = Histogram("ledger_decision_seconds",
                             "From a poll's signals in the dispatcher's hands to their decision "
                             "committed, per signal, by account.", ["account"],
                             buckets=LATENCY_BUCKETS)
SIGNAL_TO_INTENT_SECONDS = Histogram("ledger_signal_to_intent_seconds",
                                     "From a signal's occurred_at to its intent committed, per "
                                     "allowed signal, by account.", ["account"],
                                     buckets=LATENCY_BUCKETS)
APPEND_SECONDS = Histogram("ledger_append_seconds",
                           "One append statement to the store (a batch of events).",
                           buckets=LATENCY_BUCKETS)

# The supervisor of `ledger run all`.
RESTARTS = Counter("ledger_supervisor_restarts_total",
                   "Children started again after they exited unexpectedly, by child.", ["child"])
CHILD_UP = Gauge("ledger_supervisor_child_up", "1 while the child runs, by child.", ["child"])

METRICS_HOST = "127.0.0.1"


def serve(port: int, host: str = METRICS_HOST) -> None:
    """Serve the metrics over HTTP; port 0 serves nothing."""
    if port:
        start_http_server(port, addr=host)
