"""Dead letters: a message no consumer can use goes to `dead-letters`, never silently away.

The original bytes and key are kept as they were; headers say why (one line naming the field and
the value), where the message came from (topic, partition, offset) and which consumer refused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

REASON_LENGTH_MAX = 1000
TRUNCATED_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A refused message and why it was refused."""

    message: ConsumerRecord[bytes, bytes]
    reason: str


def text_headers(letter: DeadLetter, consumer: str) -> list[tuple[str, str]]:
    """Return the headers that explain a dead letter."""
    message = letter.message
    reason = letter.reason.splitlines()[0][:REASON_LENGTH_MAX] if letter.reason else "refused"
    return [
        ("dlq.reason", reason),
        ("dlq.topic", message.topic),
        ("dlq.partition", str(message.partition)),
        ("dlq.offset", str(message.offset)),
        ("dlq.consumer", consumer),
    ]


async def publish(publisher: Any, letters: Sequence[DeadLetter], consumer: str) -> None:
    """Publish dead letters through a faststream publisher, each acknowledged by the broker.

    A message too large to send again with its headers (it came in just under the broker's
    limit) is sent cut to TRUNCATED_BYTES, with `dlq.truncated` giving its original size: the
    reason and the origin are what an operator needs, and a dead letter must never fail.
    """
    for letter in letters:
        headers = dict(text_headers(letter, consumer))
        value = letter.message.value
        try:
            await publisher.publish(value, key=letter.message.key, headers=headers)
        except MessageSizeTooLargeError:
            headers["dlq.truncated"] = str(len(value or b""))
            await publisher.publish((value or b"")[:TRUNCATED_BYTES], key=letter.message.key,
                                    headers=headers)
