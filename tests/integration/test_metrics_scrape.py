"""Goal: after a scripted workload, every metric of docs/metrics.md is served by the process that
owns it, with the value the store implies: the book gauges equal `ledger positions --json`, the
lags equal `ledger status --json`, the decision counters and histograms count the store's
SignalEvaluated events, and the supervisor counts the restart of a child killed with -9.

Method: a database and topics of its own, `ledger run all` with a metrics port (the supervisor
on it, its children on the ports after it), signals, executions and a malformed message through
Kafka, `ledger reconcile` and `ledger halt` through the CLI; then every port scraped and parsed
with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import subprocess
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.db import connect
from ledger.events import SignalEvaluated
from ledger.kafka_admin import ensure_topics
from ledger.settings import Settings
from ledger.topics import Topics
from tests.conftest import eventually, run_cli, with_topics
from tests.integration.test_pipeline import produce, read_to_end
from tests.processes import LedgerProcess
from tests.unit.test_metrics_catalogue import documented

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

SETTLE_TIMEOUT_S = 120.0
CHILDREN = ("ingest", "relay", "projector")
# Samples of one scrape: (name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _free_ports(count: int) -> int:
    """Return the first of `count` consecutive free ports on loopback."""
    for _ in range(200):
        base = random.randrange(20_000, 40_000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports")


def _scrape(port: int) -> Samples:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _signal(account: str, signal_id: str, quantity: str) -> bytes:
    """A put at 6.00 x 100: $600 a contract."""
    return json.dumps({"signal_id": signal_id, "account": account,
                       "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "symbol": "MSFT 260220P00400000", "instrument": "option", "side": "long",
                       "quantity": quantity, "limit_price": "6.00",
                       "multiplier": "100"}).encode()


def _execution(account: str, event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"account": account, "type": event_type,
                       "occurred_at": "2026-02-03T17:29:04Z", "data": data}).encode()


def _cli_json(settings: Settings, *args: str) -> Any:
    done = run_cli(settings, *args, "--json")
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def _child_pid(supervisor: int, name: str) -> int:
    listed = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(supervisor)],
                            capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        pid, args = line.strip().split(" ", 1)
        if args.endswith(f"run {name}"):
            return int(pid)
    raise AssertionError(f"no child {name} in {listed.stdout!r}")


async def _decisions(admin: asyncpg.Connection, account: str) -> list[SignalEvaluated]:
    rows = await admin.fetch("SELECT data FROM events WHERE account = $1 "
                             "AND type = 'SignalEvaluated' ORDER BY sequence", account)
    return [SignalEvaluated.model_validate_json(row["data"]) for row in rows]


async def test_every_documented_metric_is_served_with_the_value_the_store_implies(
        make_database: Callable[[], Awaitable[Settings]], topic_prefix: str, tmp_path: Path,
        account_name: Callable[[str], str]) -> None:
    settings = with_topics(await make_database(), topic_prefix)
    await ensure_topics(settings)
    topics = Topics.from_settings(settings)
    wide, narrow, silent = account_name("a_wide"), account_name("b_narrow"), account_name("c_off")
    for account in (wide, narrow, silent):
        assert run_cli(settings, "accounts", "add", account).returncode == 0
    assert run_cli(settings, "limits", "set", wide, "--max-positions", "3",
                   "--max-exposure", "10000").returncode == 0
    assert run_cli(settings, "limits", "set", narrow, "--max-positions", "1",
                   "--max-exposure", "2000").returncode == 0
    base = _free_ports(6)
    # Children in this order: ingest, relay, projector, then the dispatchers in account order.
    ports = {"supervisor": base, "ingest": base + 1, "relay": base + 2, "projector": base + 3,
             f"dispatcher-{wide}": base + 4, f"dispatcher-{narrow}": base + 5}
    supervisor = LedgerProcess(settings.model_copy(update={"metrics_port": base}), tmp_path,
                               "all", env={"LEDGER_SIGNAL_GRACE_S": "3",
                                           "LEDGER_LOG_FILE": str(tmp_path / "ledger.log")})
    supervisor.start()
    assert supervisor.process is not None
    admin = await connect(settings.database_url)
    try:
        async def all_up() -> bool:
            served = _scrape(base)
            return all(_value(served, "ledger_supervisor_child_up", child=child) == 1.0
                       for child in ports if child != "supervisor")

        await eventually(all_up, SETTLE_TIMEOUT_S)
        os.kill(_child_pid(supervisor.process.pid, "relay"), 9)

        async def relay_restarted() -> bool:
            served = _scrape(base)
            return (_value(served, "ledger_supervisor_restarts_total", child="relay") == 1.0
                    and _value(served, "ledger_supervisor_child_up", child="relay") == 1.0)

        await eventually(relay_restarted, SETTLE_TIMEOUT_S)

        # Each dispatcher is consuming once a first signal of its account is decided.
        await produce(settings, topics.signals, [(wide.encode(), _signal(wide, "W-0", "1")),
                                                 (narrow.encode(), _signal(narrow, "N-0", "1"))])

        async def dispatchers_ready() -> bool:
            return all([len(await _decisions(admin, a)) == 1 for a in (wide, narrow)])

        await eventually(dispatchers_ready, SETTLE_TIMEOUT_S)
        await produce(settings, topics.signals, [
            (wide.encode(), _signal(wide, "W-1", "3")),      # $1,800: allowed
            (wide.encode(), _signal(wide, "W-2", "20")),     # $12,000: over max_exposure
            (narrow.encode(), _signal(narrow, "N-1", "1")),  # a second position: over max 1
            (silent.encode(), _signal(silent, "C-1", "1")),  # no dispatcher: undecided
            (wide.encode(), b"{broken"),                     # dead letter
        ])
        await produce(settings, topics.executions, [
            (wide.encode(), _execution(wide, "OrderFilled", {
                "fill_id": "F-1", "position_id": "P-F-1", "symbol": "MSFT", "instrument": "equity",
                "side": "long", "quantity": "2", "price": "410.25"})),
            (silent.encode(), _execution(silent, "PositionClosed", {
                "close_id": "K-1", "position_id": "P-nowhere", "price": "1.00",
                "reason": "take_profit"})),
        ])

        async def decided() -> bool:
            return (len(await _decisions(admin, wide)) == 3
                    and len(await _decisions(admin, narrow)) == 2
                    and await admin.fetchval("SELECT count(*) FROM events WHERE type IN "
                                             "('OrderFilled', 'DiscrepancyFound') AND account = "
                                             "ANY($1)", [wide, silent]) == 2)

        await eventually(decided, SETTLE_TIMEOUT_S)
        as_of = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for account, positions in ((wide, [{"symbol": "MSFT", "side": "long", "quantity": "2"}]),
                                   (narrow, [{"symbol": "QCOM", "side": "long",
                                              "quantity": "9"}])):
            path = tmp_path / f"{account}.json"
            path.write_text(json.dumps({"account": account, "as_of": as_of,
                                        "positions": positions}))
            _cli_json(settings, "reconcile", account, "--broker", str(path))
        assert run_cli(settings, "halt", silent, "--reason", "review").returncode == 0
        accounts = (wide, narrow, silent)

        async def settled() -> bool:
            rows = {row["account"]: row for row in _cli_json(settings, "status")["accounts"]}
            served = _scrape(ports["relay"]) | _scrape(ports["projector"])
            return all(rows[a]["lag"] == 0 and rows[a]["published"] == rows[a]["head"]
                       and _value(served, "ledger_relay_lag_events", account=a) == 0.0
                       and _value(served, "ledger_projection_lag_events", account=a) == 0.0
                       and _value(served, "ledger_account_trading_state", account=a,
                                  state="halted") == float(a == silent)
                       for a in accounts)

        await eventually(settled, SETTLE_TIMEOUT_S)

        async def undecided_counted() -> bool:
            return _value(_scrape(ports["ingest"]), "ledger_signals_undecided_total",
                          account=silent) == 1.0

        await eventually(undecided_counted, SETTLE_TIMEOUT_S)
        await asyncio.sleep(2)  # one more look of the projector's watch, one more relay round
        scraped = {process: _scrape(port) for process, port in ports.items()}
        everything: Samples = {key: value for samples in scraped.values()
                               for key, value in samples.items()}
        dead_letters = await read_to_end(settings, topics.dead_letters)
        heads = {row["account"]: row["head"] for row in _cli_json(settings, "status")["accounts"]}
        documents = {a: _cli_json(settings, "positions", a) for a in accounts}
        decisions = {a: await _decisions(admin, a) for a in accounts}
        discrepancies = await admin.fetchval("SELECT count(*) FROM events WHERE account = $1 "
                                             "AND type = 'DiscrepancyFound'", silent)
    finally:
        await admin.close()
        assert supervisor.stop() == 0, supervisor.log()

    # Every documented metric is served by some process.
    served_names = {name for name, _ in everything}
    for name, (kind, _) in documented().items():
        exported = f"{name}_count" if kind == "histogram" else name
        assert exported in served_names, f"{name} is documented but no process serves it"

    book = scraped["projector"]
    for account, document in documents.items():
        def gauge(name: str, **labels: str) -> float | None:
            return _value(book, name, account=account, **labels)  # noqa: B023

        assert gauge("ledger_account_exposure_dollars") == float(Decimal(document["exposure"]))
        assert gauge("ledger_account_open_exposure_dollars") == float(
            Decimal(document["open_exposure"]))
        assert gauge("ledger_account_pending_exposure_dollars") == float(
            Decimal(document["pending_exposure"]))
        assert gauge("ledger_account_open_positions") == len(document["open_positions"])
        assert gauge("ledger_account_pending_intents") == len(document["pending_intents"])
        opening = sum(1 for intent in document["pending_intents"] if not intent["reducing"])
        assert gauge("ledger_account_positions_counted") == (
            len(document["open_positions"]) + opening)
        for limit, value in (document["limits"] or {}).items():
            in_force = None if value is None else float(Decimal(str(value)))
            assert gauge("ledger_account_limit", limit=limit) == in_force, limit
        for state in ("active", "reducing", "halted"):
            assert gauge("ledger_account_trading_state", state=state) == float(
                document["trading_state"] == state), state
        assert _value(scraped["relay"], "ledger_relay_lag_events", account=account) == 0.0
        assert gauge("ledger_projection_lag_events") == 0.0

    # The figures themselves, so that a gauge and a document wrong the same way still fail.
    assert documents[wide]["open_exposure"] == "820.50"
    assert _value(book, "ledger_account_pending_intents", account=wide) == 2.0
    assert documents[narrow]["trading_state"] == "reducing"
    assert documents[silent]["trading_state"] == "halted"

    # Reconciliation: wide matched just now, narrow failed and was never matched.
    since = _value(book, "ledger_account_seconds_since_reconciliation", account=wide)
    assert since is not None
    assert 0 <= since < SETTLE_TIMEOUT_S
    assert _value(book, "ledger_account_seconds_since_reconciliation", account=narrow) == math.inf
    assert _value(book, "ledger_account_reconciliation_failed", account=wide) == 0.0
    assert _value(book, "ledger_account_reconciliation_failed", account=narrow) == 1.0
    decided_since = _value(book, "ledger_account_seconds_since_last_decision", account=wide)
    assert decided_since is not None
    assert 0 <= decided_since < SETTLE_TIMEOUT_S
    assert _value(book, "ledger_account_seconds_since_last_decision", account=silent) == math.inf

    # Decisions: the counters and the histograms count the store's SignalEvaluated events.
    for account in (wide, narrow):
        served = scraped[f"dispatcher-{account}"]
        expected: dict[tuple[str, str], int] = {}
        for decision in decisions[account]:
            gate = next((g.gate for g in decision.gates if not g.passed), "")
            key = ("allowed", "") if decision.allowed else ("blocked", gate)
            expected[key] = expected.get(key, 0) + 1
        counted = {(dict(labels)["outcome"], dict(labels)["gate"]): int(value)
                   for (name, labels), value in served.items()
                   if name == "ledger_decisions_total" and dict(labels)["account"] == account}
        assert counted == expected
        allowed = sum(1 for decision in decisions[account] if decision.allowed)
        assert _value(served, "ledger_decision_seconds_count", account=account) == len(
            decisions[account])
        assert _value(served, "ledger_signal_to_intent_seconds_count", account=account) == allowed
        assert (_value(served, "ledger_append_seconds_count") or 0) >= 1
    # narrow's: one allowed, one over its single position.
    assert set(expected) == {("allowed", ""), ("blocked", "max_open_positions")}

    # Ingest: the discrepancy, the undecided signal, and every dead letter on the topic.
    assert _value(scraped["ingest"], "ledger_discrepancies_total", account=silent) == float(
        discrepancies) == 1.0
    refused = sum(value for (name, _), value in everything.items()
                  if name == "ledger_dead_letters_total")
    assert refused == len(dead_letters) >= 2

    # The projector applied every event of these accounts; the relay restarted once, nothing else.
    assert _value(scraped["projector"], "ledger_events_projected_total") == sum(
        heads[a] for a in accounts)
    restarts = {dict(labels)["child"]: value for (name, labels), value in
                scraped["supervisor"].items() if name == "ledger_supervisor_restarts_total"}
    assert restarts == {child: float(child == "relay") for child in ports if child != "supervisor"}
