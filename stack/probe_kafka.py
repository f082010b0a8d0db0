"""Wait until a Kafka broker answers a metadata request; exit 1 after the deadline.

Used by stack/stack.sh: a listening socket is not enough, the broker must have joined its own
KRaft quorum and be able to serve metadata before anything may produce to it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

ADMIN_USER = "ledger-admin"
PROBE_INTERVAL_S = 0.5
REQUEST_TIMEOUT_MS = 3000


async def broker_answers(bootstrap: str, password: str | None) -> bool:
    security: dict[str, str] = {}
    if password is not None:
        security = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_plain_username": ADMIN_USER, "sasl_plain_password": password}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS,
                                **security)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet"; the deadline bounds the wait
        return False
    finally:
        await admin.close()


async def wait_for(bootstrap: str, deadline_s: float, password: str | None) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if await broker_answers(bootstrap, password):
            return True
        await asyncio.sleep(PROBE_INTERVAL_S)
    return False


def main() -> int:
    # Refused connections are expected while the broker starts; the deadline reports failure.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    bootstrap, deadline_s = sys.argv[1], float(sys.argv[2])
    # The administrator's password file, when the cluster authenticates its clients.
    password = Path(sys.argv[3]).read_text().splitlines()[0] if len(sys.argv) > 3 else None
    return 0 if asyncio.run(wait_for(bootstrap, deadline_s, password)) else 1


if __name__ == "__main__":
    sys.exit(main())
