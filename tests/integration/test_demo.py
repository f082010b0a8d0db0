"""The trading-morning demo end to end, shortened: `python -m demo --seconds 15`.

Method: run the demo as a user would (it starts `ledger run all` itself) against its own fresh
database, then check its verdict, the audit of the morning (no breach), the audit of the recorded
incident (breaches found) and the charts it wrote.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ledger.db import connect, dsn_for_database
from ledger.settings import Settings
from tests.conftest import ROOT

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow]

DEMO_TIMEOUT_S = 300


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
    finally:
        admin = await connect(dsn_for_database(base_settings.database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()

    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:] + result.stderr.decode()[-3000:]
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
