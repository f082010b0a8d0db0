"""The trading-morning demo end to end, shortened: `python -m demo --seconds 15`.

Method: run the demo as a user would (it starts `ledger run all` itself) against its own fresh
database, then check its verdict, the audit of the morning (no breach), the audit of the recorded
incident (breaches found) and the charts it wrote; and, in its store before it is dropped, the
broker's reconciliations: the scripted glitch (a fill reported twice) failed the one of `large`
with exactly the difference the demo printed, `large` went to reducing and stayed so until the
operator resumed it after the audit, and every other statement matched.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from ledger import store
from ledger.db import connect, dsn_for_database
from ledger.events import (
    Difference,
    DiscrepancyFound,
    Event,
    OrderFilled,
    PositionsReconciled,
    ReconciliationFailed,
    TradingResumed,
)
from ledger.settings import Settings
from projections.fold import fold, initial_state
from tests.conftest import ROOT

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

DEMO_TIMEOUT_S = 300
ACCOUNTS = ("large", "tiny")
GLITCH = re.compile(r"broker glitch: fill (?P<fill>X-\w+) \(large: (?P<quantity>\d+) "
                    r"(?P<symbol>\S+ \S+) (?P<side>long|short) @ (?P<price>[\d.]+)\) reported "
                    r"again as (?P<again>X-\w+)\n  the broker's book counts it once "
                    r"\((?P<broker>\d+) [^)]*\), the ledger books both \((?P<ledger>\d+)\)")


async def _events(database_url: str) -> dict[str, list[Event]]:
    conn = await connect(database_url)
    try:
        return {account: await store.read_stream(conn, account, batch_size=100_000)
                for account in ACCOUNTS}
    finally:
        await conn.close()


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
async def test_demo_when_run_short_never_breaches_and_shows_the_incidents_breaches(
    base_settings: Settings, tmp_path: Path,
) -> None:
    database = f"ledger_demo_test_{uuid.uuid4().hex[:8]}"
    try:
        result = subprocess.run(  # noqa: ASYNC221 - the demo is the unit under test
            [sys.executable, "-m", "demo", "--seconds", "15", "--database", database,
             "--out", str(tmp_path)],
            cwd=ROOT, capture_output=True, timeout=DEMO_TIMEOUT_S, check=False,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "160",
                 "LEDGER_SECRETS_DIR": str(base_settings.secrets_dir)})
        output = result.stdout.decode()
        assert result.returncode == 0, output[-3000:] + result.stderr.decode()[-3000:]
        events = await _events(dsn_for_database(base_settings.database_url, database))
    finally:
        admin = await connect(dsn_for_database(base_settings.database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()

    assert "large " in output
    # The risk desk moved `large` to reducing and back; the audit stayed clean all the same.
    assert "large -> reducing" in output
    assert "large -> active" in output
    assert output.count("no breach") == 2, output
    assert "incident  43 events, peak 12 positions" in output
    assert "2 breaches" in output
    assert "the morning never exceeded a limit; the recorded incident did" in output
    for chart in ("morning.png", "incident.png"):
        assert (tmp_path / chart).stat().st_size > 10_000

    _assert_the_glitch_failed_large_until_the_operator_resumed_it(output, events["large"])
    for account in ACCOUNTS:
        own = events[account]
        # The broker's statements every few seconds: matched, but for the glitch.
        assert any(isinstance(e.data, PositionsReconciled) for e in own), account
        assert not [e for e in own if isinstance(e.data, DiscrepancyFound)], account
    assert not [e for e in events["tiny"] if isinstance(e.data, ReconciliationFailed)]


def _assert_the_glitch_failed_large_until_the_operator_resumed_it(
        output: str, events: list[Event]) -> None:
    glitch = GLITCH.search(output)
    assert glitch is not None, output
    quantity = Decimal(glitch["quantity"])
    assert Decimal(glitch["ledger"]) == Decimal(glitch["broker"]) + quantity

    # The same fill twice in the store, under two fill ids.
    fills = {e.data.fill_id: e.data for e in events if isinstance(e.data, OrderFilled)}
    first, again = fills[glitch["fill"]], fills[glitch["again"]]
    assert first.model_dump(exclude={"fill_id"}) == again.model_dump(exclude={"fill_id"})
    assert (first.symbol, first.side, first.quantity, format(first.price, "f")) == (
        glitch["symbol"], glitch["side"], quantity, glitch["price"])

    # One failed reconciliation, with exactly the difference the broker's book implies.
    failed = [e for e in events if isinstance(e.data, ReconciliationFailed)]
    assert len(failed) == 1, failed
    data = failed[0].data
    assert isinstance(data, ReconciliationFailed)
    assert data.differences == (Difference.model_validate({
        "symbol": glitch["symbol"], "side": glitch["side"], "broker": glitch["broker"],
        "ledger": glitch["ledger"]}),)
    difference = (f"{glitch['symbol']} {glitch['side']}: broker {glitch['broker']}, "
                  f"ledger {glitch['ledger']}")
    assert f"ledger: ReconciliationFailed, {difference}: large -> reducing" in output
    assert f"#{failed[0].sequence} ReconciliationFailed (broker as of" in output
    assert f"ledger at #{data.head}): {difference}" in output

    # `large` went to reducing with the failure and stayed so until the operator's resume, the
    # last event of the morning's stream.
    assert failed[0].sequence is not None
    at = failed[0].sequence
    state = fold(events[:at], initial_state("large"))
    assert state.trading_state == "reducing"
    for event in events[at:-1]:
        state = fold([event], state)
        assert state.trading_state == "reducing", event
    resumed = events[-1]
    assert isinstance(resumed.data, TradingResumed)
    assert glitch["again"] in (resumed.data.reason or "")
    assert fold([resumed], state).trading_state == "active"
    assert "operator resumes large after the audit" in output
    assert f"large: TradingResumed at sequence {resumed.sequence}" in output
