"""The AsyncAPI document of `ledger asyncapi` is complete, valid, and true of real messages.

Goal: an outside team can build a producer or a consumer from the document alone. Method: (a) its
channels are exactly the topics of `ledger.topics.Topics`; (b) the official AsyncAPI parser
(@asyncapi/parser, run by tools/asyncapi/validate.mjs) accepts what the command prints and refuses
a broken document; (c) the ledger's own processes (ingest with its signal watch, the relay, the
projector, a dispatcher) produce messages on every topic, and each one read back from Kafka must
match its channel's payload schema, key and headers (jsonschema, draft 7: the AsyncAPI schema
format is its superset).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import subprocess
import uuid
from typing import Any

import asyncpg
import pytest
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from console.asyncapi import document as asyncapi_document
from ledger import kafka
from ledger.settings import Settings
from ledger.topics import Topics
from tests.conftest import ROOT, cli_env, eventually, python_subprocess_args, with_topics
from tests.integration import test_poison as poison
from tests.integration.test_pipeline import produce, read_to_end
from tests.integration.test_poison import Cluster, execution, now, signal

VALIDATOR = ROOT / "tools" / "asyncapi" / "validate.mjs"
PARSER = ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "parser"
SETTLE_TIMEOUT_S = 90.0
SIGNAL_INTERVAL_S = 2.0

JsonObject = dict[str, Any]

# The poison tests' running system (ingest, relay, projector, one account's dispatcher), reused
# as their fixture: a test argument named like it receives it.
cluster = poison.cluster


@dataclasses.dataclass(frozen=True)
class Record:
    """What `problems` reads of a Kafka record (aiokafka's ConsumerRecord has these too)."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def validate_with_parser(text: str) -> subprocess.CompletedProcess[str]:
    """Run the official parser on a document; exit code 0 means no diagnostic of severity error."""
    assert PARSER.is_dir(), "the AsyncAPI parser is not installed: run `make asyncapi-tools`"
    return subprocess.run(["node", str(VALIDATOR)], input=text, capture_output=True, text=True,
                          timeout=120, check=False)


def resolve(document: JsonObject, ref: str) -> JsonObject:
    """Follow a local $ref (`#/a/b`) in the document."""
    node: Any = document
    for step in ref.removeprefix("#/").split("/"):
        node = node[step]
    assert isinstance(node, dict), ref
    return node


def checker(document: JsonObject, schema: JsonObject) -> Draft7Validator:
    # The components sit at the root, so the document's `#/components/...` refs resolve as is.
    return Draft7Validator({"allOf": [schema], "components": document["components"]},
                           format_checker=Draft7Validator.FORMAT_CHECKER)


def messages_by_address(document: JsonObject) -> dict[str, JsonObject]:
    """Each channel's address and its one message."""
    found = {}
    for channel in document["channels"].values():
        (reference,) = channel["messages"].values()
        found[channel["address"]] = resolve(document, reference["$ref"])
    return found


def problems(document: JsonObject, message: JsonObject, record: Record) -> list[str]:
    """What a Kafka record does not do of what the document's message says; empty if nothing."""
    found = []
    payload: Any = record.value.decode("utf-8", "replace")
    if message["contentType"] == "application/json":
        payload = json.loads(record.value)
    found += [f"payload {error.json_path}: {error.message}"
              for error in checker(document, message["payload"]).iter_errors(payload)]
    # No key is JSON's null here, so that a schema can say whether a key may be absent.
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    found += [f"key: {error.message}" for error in
              checker(document, message["bindings"]["kafka"]["key"]).iter_errors(key)]
    if "headers" in message:
        headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
        found += [f"headers {error.json_path}: {error.message}"
                  for error in checker(document, message["headers"]).iter_errors(headers)]
    return found


# --- (a) every topic, and nothing else -----------------------------------------------------------

def test_document_names_every_topic_and_nothing_else(base_settings: Settings) -> None:
    settings = with_topics(base_settings, "p1.")
    topics = Topics.from_settings(settings)
    names = {getattr(topics, field.name) for field in dataclasses.fields(Topics)}

    document = asyncapi_document(settings)

    channels = document["channels"].values()
    assert sorted(channel["address"] for channel in channels) == sorted(names)
    assert names == set(topics.all())
    assert all(channel["bindings"]["kafka"]["topic"] == channel["address"]
               for channel in channels)
    operated = {operation["channel"]["$ref"] for operation in document["operations"].values()}
    assert operated == {f"#/channels/{name}" for name in document["channels"]}


# --- (b) the official parser ---------------------------------------------------------------------

def test_the_official_parser_accepts_what_ledger_asyncapi_prints(base_settings: Settings) -> None:
    # `python -m console` is the `ledger` command of this checkout, whatever entry point an
    # older installation left in the virtualenv.
    printed = subprocess.run(python_subprocess_args("console", "asyncapi"), cwd=ROOT,
                             env=cli_env(with_topics(base_settings, "p1.")),
                             capture_output=True, timeout=120, check=False)
    assert printed.returncode == 0, printed.stderr

    result = validate_with_parser(printed.stdout.decode())

    assert result.returncode == 0, result.stderr
    assert json.loads(printed.stdout)["asyncapi"] == "3.0.0"


def test_the_official_parser_refuses_a_broken_document(base_settings: Settings) -> None:
    broken = copy.deepcopy(asyncapi_document(base_settings))
    broken["channels"]["signals"]["messages"]["signal"] = {"$ref": "#/components/messages/nope"}

    result = validate_with_parser(json.dumps(broken))

    assert result.returncode == 1
    assert "'#/components/messages/nope' does not exist [invalid-ref]" in result.stderr


def test_the_official_parser_refuses_an_invalid_payload_schema(base_settings: Settings) -> None:
    broken = copy.deepcopy(asyncapi_document(base_settings))
    broken["components"]["schemas"]["Signal"]["properties"]["quantity"] = {"type": "decimal"}

    result = validate_with_parser(json.dumps(broken))

    assert result.returncode == 1
    assert "properties.quantity.type" in result.stderr


# --- (c) real messages ---------------------------------------------------------------------------

def test_problems_finds_a_payload_a_key_and_a_header_that_do_not_match(
        base_settings: Settings) -> None:
    document = asyncapi_document(base_settings)
    intent = messages_by_address(document)[Topics.from_settings(base_settings).order_intents]
    record = Record(key=b"Not An Account", value=b'{"type": "IntentIssued"}',
                    headers=[("account", b"alpha"), ("surprise", b"1")])

    found = problems(document, intent, record)

    # The payload is one of the routed events (IntentIssued or IntentCancelled): it is none.
    assert any(line.startswith("payload $: {'type': 'IntentIssued'} is not valid under any")
               for line in found), found
    assert any(line.startswith("key: 'Not An Account' does not match") for line in found), found
    assert any("'sequence' is a required property" in line for line in found), found
    assert any("'surprise' was unexpected" in line for line in found), found


async def _issued_intent(admin: asyncpg.Connection, account: str) -> bool:
    return bool(await admin.fetchval(
        "SELECT count(*) FROM events WHERE account = $1 AND type = 'IntentIssued'", account))


async def _published_everything(admin: asyncpg.Connection, account: str) -> bool:
    return bool(await admin.fetchval(
        "SELECT s.head = r.published_sequence FROM streams s JOIN relay_positions r "
        "USING (account) WHERE account = $1", account))


@pytest.mark.pg
@pytest.mark.kafka
@pytest.mark.slow
async def test_real_messages_on_every_topic_match_the_document(
        cluster: Cluster, admin: asyncpg.Connection) -> None:
    settings, topics, account = cluster.settings, cluster.topics, cluster.traded
    fill = execution(account, "F-doc")
    close = {"account": account, "type": "PositionClosed", "occurred_at": now(),
             "data": {"close_id": "C-doc", "position_id": "P-F-doc", "price": "61.00"}}
    rejection = {"account": account, "type": "IntentRejected", "occurred_at": now(),
                 "data": {"intent_id": "I-unknown-to-the-ledger", "reason": "broker: closed"}}
    key = account.encode()
    # Poison for ingest, the signal watch and the projector: a dead letter from each. They are
    # the test's, not the contract's, and are left out of the check below.
    malformed = b'{"account": oops'
    keyless = json.dumps(execution(account, "F-keyless")).encode()
    invalid_signal = json.dumps(signal(account, "S-bad", quantity="twelve")).encode()
    forged = b'{"forged": "on ledger-events"}'
    await produce(settings, topics.executions, [(key, json.dumps(fill).encode()),
                                                (key, json.dumps(close).encode()),
                                                (key, json.dumps(rejection).encode()),
                                                (key, malformed), (None, keyless)])
    await produce(settings, topics.signals, [(key, invalid_signal)])
    await produce(settings, topics.ledger_events, [(key, forged)])

    # A signal is blocked as stale until the dispatcher has joined its group: send fresh ones
    # until one is allowed, so that the relay has an intent to route.
    async def intent_issued() -> bool:
        if not await _issued_intent(admin, account):
            await produce(settings, topics.signals, [(key, json.dumps(
                signal(account, f"S-{uuid.uuid4().hex[:8]}")).encode())])
            await asyncio.sleep(SIGNAL_INTERVAL_S)
        return await _issued_intent(admin, account)

    async def every_consumer_refused_its_poison() -> bool:
        letters = await read_to_end(settings, topics.dead_letters)
        return {kafka.header(letter.headers, "dlq.consumer") for letter in letters} >= {
            "ledger-ingest", "ledger-reconcile", "ledger-signal-watch",
            "ledger-projector"} and any(
            letter.key is None for letter in letters)

    await eventually(intent_issued, SETTLE_TIMEOUT_S)
    # Then a broker's view that differs (the account goes to reducing) and a malformed one.
    view = json.dumps({"account": account, "as_of": now(), "positions": [
        {"symbol": "KO", "side": "long", "quantity": "3"}]}).encode()
    bad_view = json.dumps({"account": account, "as_of": now(), "positions": "none"}).encode()
    await produce(settings, topics.broker_positions, [(key, view), (key, bad_view)])
    async def view_judged() -> bool:
        return bool(await admin.fetchval(
            "SELECT count(*) FROM events WHERE account = $1 AND type = 'ReconciliationFailed'",
            account))

    await eventually(view_judged, SETTLE_TIMEOUT_S)
    await eventually(lambda: _published_everything(admin, account), SETTLE_TIMEOUT_S)
    await eventually(every_consumer_refused_its_poison, SETTLE_TIMEOUT_S)
    document = asyncapi_document(settings)
    # Dead letters carry the poison as it was: there it is the ledger's own message.
    sent_by_test = {topics.executions: {malformed, keyless}, topics.signals: {invalid_signal},
                    topics.ledger_events: {forged}, topics.broker_positions: {bad_view}}
    records = {address: [record for record in await read_to_end(settings, address)
                         if record.value not in sent_by_test.get(address, set())]
               for address in messages_by_address(document)}

    assert set(records) == set(topics.all())
    for address, message in messages_by_address(document).items():
        assert records[address], f"nothing was sent on {address}"
        for record in records[address]:
            found = problems(document, message, record)
            assert not found, (address, record.value[:300], record.headers, found)
    seen_types = {json.loads(record.value)["type"] for record in records[topics.ledger_events]}
    assert {"LimitsSet", "OrderFilled", "PositionClosed", "IntentRejected", "SignalEvaluated",
            "IntentIssued", "ReconciliationFailed"} <= seen_types
    # Sent as a broker adapter does, without event_id: ingest derives it, the document says so.
    assert not any("event_id" in json.loads(record.value)
                   for record in records[topics.executions])
