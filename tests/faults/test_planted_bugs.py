"""Goal: the campaign can fail. Each planted bug breaks one invariant in a plausible way, and a
schedule run with it must be caught by the check that guards that invariant.

Method: a cluster of its own per bug (tests/faults/bugged.py wraps the process that carries it),
one schedule with the faults pinned so the bug has its chance (hostile messages for the dead
letters, two operators replaying signal files for the head lock, a lower rate limit for the
dispatcher that ignores it, sides flipped in the broker's planted mismatches for the
reconciliation blind to sides), a short settle, and the violations found must include the
expected check. Check 1 (sequences and unique ids) is held by the store's own constraints, which
no process can get around; test_checker.py plants its bugs in an observation instead.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from ledger.events import LimitsSet
from ledger.settings import Settings
from tests.faults.checker import find_violations
from tests.faults.conftest import start_cluster
from tests.faults.harness import limits_for, run_schedule

pytestmark = [pytest.mark.pg, pytest.mark.kafka, pytest.mark.slow, pytest.mark.chaos]

SEED = 7
SETTLE_S = 20.0

PLANTED = [
    # (bug, the role it is planted in, the fault plan, operators replaying files, check caught)
    ("lost-write", ["ingest"], [], False, 2),
    ("relay-skips", ["relay"], [], False, 3),
    ("projector-drops-closes", ["projector"], [], False, 4),
    ("ignores-pending", ["dispatcher"], [], False, 5),
    ("ignores-rate-limit", ["dispatcher"], [], False, 5),
    ("skip-lock", ["dispatcher", "dispatch"], [], True, 6),
    ("swallows-malformed", ["ingest"], [(1.0, "hostile")], False, 7),
    ("relay-sends-dead-orders", ["relay"], [(0.5, "relay-pause")], False, 9),
    ("reconciles-blind", ["ingest"], [], False, 10),
]


def _rate_of_two(rng: random.Random) -> LimitsSet:
    # SEED 7's own limits already bite (2 positions, 3 orders a minute: two of its accounts
    # issue 4-5 intents within the minute once the rate is ignored); at 2 a minute each of
    # them shows it by two intents or more, so the catch does not hang on one intent's timing.
    return limits_for(rng).model_copy(update={"max_orders_per_minute": 2})


# The limits a planted bug's schedule draws where the harness's own leave it too little margin.
LIMITS: dict[str, Callable[[random.Random], LimitsSet]] = {"ignores-rate-limit": _rate_of_two}
# The mismatches the broker plants (then wherever it can) where any other kind might escape the
# bug: a comparison blind to the side finds a missing symbol, an extra one or a quantity off on
# a long line all the same, but takes a side flipped for a match.
MISMATCHES: dict[str, tuple[str, ...]] = {"reconciles-blind": ("side-flipped",)}


@pytest.mark.timeout(300)
async def test_self_promoting_dispatcher_is_refused_by_the_database(
        make_database: Callable[[], Awaitable[Settings]],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A dispatcher that resumes its own account and raises its limits after every decision.

    The database refuses each attempt (so check 8, which would catch such an event, stays
    quiet), and the refusals prove the bug ran. tests/faults/test_checker.py shows check 8
    catching the same events had they been stored.
    """
    log_dir = tmp_path_factory.mktemp("self-promoting")
    refusals = log_dir / "refusals.log"
    cluster = await start_cluster(make_database, log_dir, f"planted-self{id(log_dir) % 10_000}.",
                                  {"dispatcher": "self-promoting"})
    cluster.env["LEDGER_BUG_LOG"] = str(refusals)
    try:
        observation = await run_schedule(cluster, SEED, plan=[], manual_dispatch=False,
                                         settle_timeout_s=SETTLE_S)
    finally:
        await cluster.stop()
    lines = refusals.read_text().splitlines() if refusals.exists() else []
    assert any("may not append TradingResumed" in line for line in lines), lines[:3]
    assert any("may not append LimitsSet" in line for line in lines), lines[:3]
    assert 8 not in {violation.check for violation in find_violations(observation)}
    for account, events in observation.store.items():
        for event in events:
            if event.type in ("TradingResumed", "LimitsSet"):
                assert event.sequence is not None
                role = observation.writers[account][event.sequence]
                assert observation.role_kinds[role] == ("operator", None), (account, role)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("bug", "roles", "plan", "replay_files", "expected"), PLANTED,
                         ids=[row[0] for row in PLANTED])
async def test_planted_bug_is_caught_by_its_check(
        make_database: Callable[[], Awaitable[Settings]], tmp_path_factory: pytest.TempPathFactory,
        bug: str, roles: list[str], plan: list[tuple[float, str]], replay_files: bool,
        expected: int) -> None:
    cluster = await start_cluster(make_database, tmp_path_factory.mktemp(bug),
                                  f"planted{bug[:8]}{id(plan) % 10_000}.",
                                  dict.fromkeys(roles, bug))
    try:
        observation = await run_schedule(cluster, SEED, plan=plan,
                                         manual_dispatch=replay_files, settle_timeout_s=SETTLE_S,
                                         limits=LIMITS.get(bug), mismatches=MISMATCHES.get(bug))
    finally:
        await cluster.stop()
    caught = {violation.check for violation in find_violations(observation)}
    assert expected in caught, f"{bug}: expected check {expected}, found {sorted(caught)}"
