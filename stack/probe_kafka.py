"""Wait until a Kafka broker answers a metadata request; exit 1 after the deadline.

Used by stack/stack.sh: a listening socket is not enough, the broker must have joined its own
KRaft quorum and be able to serve metadata before anything may produce to it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient

PROBE_INTERVAL_S = 0.5
REQUEST_TIMEOUT_MS = 3000


async def broker_answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet"; the deadline bounds the wait
        return False
    finally:
        await admin.close()


async def wait_for(bootstrap: str, deadline_s: float) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if await broker_answers(bootstrap):
            return True
        await asyncio.sleep(PROBE_INTERVAL_S)
    return False


def main() -> int:
    # Refused connections are expected while the broker starts; the deadline reports failure.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bootstrap, deadline_s = sys.argv[1], float(sys.argv[2])
    return 0 if asyncio.run(wait_for(bootstrap, deadline_s)) else 1


if __name__ == "__main__":
    sys.exit(main())
