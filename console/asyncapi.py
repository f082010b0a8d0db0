"""The AsyncAPI 3.0 description of the ledger's Kafka interface: every topic, and only those.

For each topic of `ledger.topics.Topics` the document names its address (prefix included), which
process of the ledger sends or receives on it (and in which consumer group), the key, the headers
its producer sets, and the payload. Payload schemas are generated from the contract's own pydantic
models (`ledger.events`), so they cannot drift from what the ledger decodes; consumer groups and
limits are read from the modules that use them. faststream's generator is not used: it knows only
the faststream-wired processes and describes raw-bytes handlers as "array of binary".
tests/integration/test_asyncapi.py checks the document with the official AsyncAPI parser and checks
real messages of every topic (payload, key, headers) against it.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, TypeAlias

from pydantic import Field, TypeAdapter

from dispatcher import process as dispatcher_process
from ledger import deadletters
from ledger.events import (
    ACCOUNT_LENGTH_MAX,
    ACCOUNT_PATTERN,
    EVENT_TYPES,
    BrokerPositions,
    Event,
    Identifier,
    IntentCancelledEvent,
    IntentIssuedEvent,
    IntentRejectedEvent,
    OrderFilledEvent,
    PositionClosed,
    PositionClosedEvent,
    Signal,
)
from ledger.kafka_admin import REPLICAS_MAX
from ledger.settings import Settings
from ledger.topics import Topics
from projections import projector
from services import ingest, signal_watch

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "0.1.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_REF = "#/components/schemas/{model}"
# What the relay routes to `order-intents` (services/relay.py).
ROUTED_TYPES = ("IntentIssued", "IntentCancelled")
RoutedEvent = Annotated[IntentIssuedEvent | IntentCancelledEvent, Field(discriminator="type")]

JsonObject: TypeAlias = dict[str, Any]

# --- What ingest accepts on `executions` --------------------------------------------------------
# Not the stored events' models as they are: ingest derives a missing event_id from the natural
# key (ledger.events.decode_event) and refuses a close without the broker's execution id, so the
# schema of `executions` must say both. These models only describe; nothing decodes with them.


class ReportedCloseData(PositionClosed):
    """Data of a close on `executions`: `close_id`, the broker's execution id, is required."""

    close_id: Identifier


class ReportedFill(OrderFilledEvent):
    """A fill reported by the broker adapter; `event_id` may be left out (derived)."""

    # A factory, not a default: the schema must show the field optional but never null.
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)


class ReportedClose(PositionClosedEvent):
    """A close reported by the position manager or broker; `event_id` may be left out (derived)."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    data: ReportedCloseData


class ReportedRejection(IntentRejectedEvent):
    """An intent the broker or router refused; `event_id` may be left out (derived)."""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)


Execution: TypeAlias = Annotated[ReportedFill | ReportedClose | ReportedRejection,
                                 Field(discriminator="type")]
_REPORTED = (ReportedFill, ReportedClose, ReportedRejection)
assert {model.model_fields["type"].default for model in _REPORTED} == ingest.ACCEPTED_TYPES, \
    "executions: the schema's types are not the ones ingest accepts"

# --- Schemas ----------------------------------------------------------------------------------


class _Schemas:
    """The components' schemas, gathered from each payload's models.

    `finish` then adds what the models check in Python, which pydantic cannot express.
    """

    def __init__(self) -> None:
        self.definitions: JsonObject = {}
        self._tags: list[tuple[str, list[str]]] = []

    def hoist(self, name: str, annotation: Any) -> JsonObject:
        """Add the schema of `annotation` and of every model it uses; return a $ref to it."""
        schema = TypeAdapter(annotation).json_schema(ref_template=SCHEMA_REF)
        for model, definition in schema.pop("$defs", {}).items():
            self._add(model, definition)
        # A model's own schema comes back inline; a discriminated union's as a oneOf of $refs,
        # with an OpenAPI-style discriminator object. In an AsyncAPI schema `discriminator` is a
        # property name meant for inheritance, and each variant's `const` already decides.
        if "discriminator" in schema:
            tag = schema.pop("discriminator")["propertyName"]
            self._tags.append((tag, [ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]]))
        self._add(name, schema)
        return {"$ref": SCHEMA_REF.format(model=name)}

    def _add(self, name: str, definition: JsonObject) -> None:
        known = self.definitions.setdefault(name, definition)
        # Two models of one name would silently describe one of them twice.
        assert known == definition, f"two different schemas are named {name}"

    def finish(self) -> JsonObject:
        """Say what the models check beyond their fields; return the definitions."""
        for tag, variants in self._tags:
            for variant in variants:
                _require_tag(self.definitions[variant], tag)
        for definition in self.definitions.values():
            _require_option_multiplier(definition)
        return self.definitions


def _require_tag(definition: JsonObject, tag: str) -> None:
    # pydantic lists the tag as optional because each model defaults it, but every event is
    # decoded through its union (ledger.events.decode_event), which refuses a message without.
    definition["properties"][tag].pop("default", None)
    if tag not in definition["required"]:
        definition["required"].insert(0, tag)


def _require_option_multiplier(definition: JsonObject) -> None:
    # What `_Traded` checks in Python (ledger/events.py): an option states its multiplier.
    properties = definition.get("properties", {})
    if "instrument" in properties and "multiplier" in properties:
        definition["if"] = {"properties": {"instrument": {"const": "option"}},
                            "required": ["instrument"]}
        definition["then"] = {"required": ["multiplier"]}


def _digits(description: str) -> JsonObject:
    return {"type": "string", "pattern": "^(0|[1-9][0-9]*)$", "description": description}


def _account_key(description: str) -> JsonObject:
    return {"type": "string", "pattern": ACCOUNT_PATTERN, "maxLength": ACCOUNT_LENGTH_MAX,
            "description": description}


def _kafka_key(schema: JsonObject) -> JsonObject:
    return {"kafka": {"key": schema, "bindingVersion": KAFKA_BINDING_VERSION}}


def _headers(required: dict[str, JsonObject], optional: dict[str, JsonObject] | None = None,
             ) -> JsonObject:
    # Closed: a header the producer adds without saying so here fails the real-message test.
    return {"type": "object", "properties": {**required, **(optional or {})},
            "required": list(required), "additionalProperties": False}


def _dispatcher_groups() -> str:
    """A regular expression of the dispatchers' consumer groups, one per account."""
    group = dispatcher_process.consumer_group(ACCOUNT_PATTERN.strip("^$"))
    assert group.endswith(ACCOUNT_PATTERN.strip("^$")), group
    assert group.removesuffix(ACCOUNT_PATTERN.strip("^$")).replace("-", "").isalpha(), group
    return group


def _relay_headers() -> dict[str, JsonObject]:
    """What the relay sets on every event it publishes (services/relay.py)."""
    return {
        "account": _account_key("The account; equals the key and the payload's `account`."),
        "sequence": _digits("The event's sequence in its account's stream (1, 2, 3...); "
                            "consumers deduplicate by account + sequence."),
        "event_id": {"type": "string", "format": "uuid", "description": "The event's id."},
        "type": {"type": "string", "enum": list(EVENT_TYPES),
                 "description": "The event's type, as in the payload."},
    }


def _dead_letter_headers(topics: Topics) -> JsonObject:
    """What `ledger.deadletters` sets: why, where from, and which consumer refused it."""
    consumers = [ingest.CONSUMER_GROUP, ingest.RECONCILE_GROUP, signal_watch.CONSUMER_GROUP,
                 projector.CONSUMER_GROUP]
    # The names go into an ECMA-262 regular expression unescaped: they must need no escaping.
    assert all(name.replace("-", "").isalpha() for name in consumers), consumers
    alternatives = "|".join([*consumers, _dispatcher_groups()])
    return _headers({
        "dlq.reason": {"type": "string", "maxLength": deadletters.REASON_LENGTH_MAX,
                       "description": "One line naming the field and the value at fault."},
        "dlq.topic": {"type": "string",
                      "enum": [topics.executions, topics.signals, topics.ledger_events,
                               topics.broker_positions],
                      "description": "The topic the message was read from."},
        "dlq.partition": _digits("Its partition there."),
        "dlq.offset": _digits("Its offset there."),
        "dlq.consumer": {"type": "string", "pattern": f"^({alternatives})$",
                         "description": "The consumer group that refused it."},
    }, optional={
        "dlq.truncated": _digits(
            "Present only when the original was too large to send again with these headers: "
            f"its size in bytes; the payload is then its first {deadletters.TRUNCATED_BYTES} "
            "bytes."),
        # faststream's publisher adds these to what ingest, a dispatcher and the projector send;
        # the signal watch sends through aiokafka and has none.
        "correlation_id": {"type": "string", "description": "Set by faststream: an id of its "
                           "own for the send, unrelated to the refused message."},
        "content-type": {"type": "string", "description": "Set by faststream: empty, since "
                         "the payload is raw bytes."},
    })


# --- The document -------------------------------------------------------------------------------


def _messages(topics: Topics, schemas: _Schemas) -> JsonObject:
    account_key = _kafka_key(_account_key("The account; must equal the payload's `account`."))
    intent_headers = _headers({**_relay_headers(),
                               "type": {"type": "string", "enum": list(ROUTED_TYPES),
                                        "description": "The event's type, as in the payload."}},
                              {"expires_at": {"type": "string", "format": "date-time",
                                              "description": "When the intent expires (UTC)."},
                               "checked_head": _digits(
                                   "The account's stream head in the snapshot that proved the "
                                   "intent live; the record's timestamp is the database clock "
                                   "of that check.")})
    # An order to place carries its expiry and the proof it was live; a cancel carries neither.
    intent_headers["if"] = {"properties": {"type": {"const": "IntentIssued"}}}
    intent_headers["then"] = {"required": ["expires_at", "checked_head"]}
    intent_headers["else"] = {"not": {"anyOf": [{"required": ["expires_at"]},
                                                {"required": ["checked_head"]}]}}
    return {
        "execution": {
            "name": "execution", "title": "Execution",
            "summary": "A fill, a close or an intent rejection, as the broker reports it.",
            "contentType": "application/json",
            "payload": schemas.hoist("Execution", Execution),
            "bindings": account_key,
        },
        "signal": {
            "name": "signal", "title": "Signal",
            "summary": "A strategy's wish to trade.",
            "contentType": "application/json",
            "payload": schemas.hoist("Signal", Signal),
            "bindings": account_key,
        },
        "brokerPositions": {
            "name": "brokerPositions", "title": "Broker positions",
            "summary": "The broker's own view of an account's open positions at `as_of`; "
                       "lines of one (symbol, side) add up.",
            "contentType": "application/json",
            "payload": schemas.hoist("BrokerPositions", BrokerPositions),
            "bindings": account_key,
        },
        "ledgerEvent": {
            "name": "ledgerEvent", "title": "Ledger event",
            "summary": "An event committed to the store, with the fields the ledger assigned "
                       "(sequence, recorded_at, global_position).",
            "contentType": "application/json",
            "payload": schemas.hoist("Event", Event),
            "headers": _headers(_relay_headers()),
            "bindings": _kafka_key(_account_key("The account.")),
        },
        "orderIntent": {
            "name": "orderIntent", "title": "Order intent",
            "summary": "An IntentIssued that was live when the relay sent it, or an "
                       "IntentCancelled (on halt) the router cancels at the broker.",
            "contentType": "application/json",
            "payload": schemas.hoist("RoutedEvent", RoutedEvent),
            "headers": intent_headers,
            "bindings": _kafka_key(_account_key("The account.")),
        },
        "deadLetter": {
            "name": "deadLetter", "title": "Dead letter",
            "summary": "A message a consumer refused, exactly as it was read.",
            "description": "The payload is the original value's bytes, unchanged (cut only as "
                           "`dlq.truncated` says): any JSON, malformed JSON, or none at all.",
            "contentType": "application/octet-stream",
            "payload": {"description": "The refused message's original bytes: any value."},
            "headers": _dead_letter_headers(topics),
            "bindings": _kafka_key({"type": ["string", "null"], "description": (
                "The refused message's original key, unchanged; null (absent) if it had none.")}),
        },
    }


def _channel(address: str, message: str, description: str, shape: tuple[int, int]) -> JsonObject:
    partitions, replicas = shape
    return {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"kafka": {"topic": address, "partitions": partitions,
                               "replicas": replicas,
                               "bindingVersion": KAFKA_BINDING_VERSION}},
    }


def _channels(topics: Topics, shape: tuple[int, int]) -> JsonObject:
    return {
        "executions": _channel(
            topics.executions, "execution",
            "Fills, closes and intent rejections, keyed by account. Sent by the broker adapter "
            "and the position manager (outside the ledger); read by ingest.", shape),
        "signals": _channel(
            topics.signals, "signal",
            "Strategies' signals, keyed by account. Sent by the strategies (outside the ledger); "
            "read by each account's dispatcher and by ingest's signal watch.", shape),
        "brokerPositions": _channel(
            topics.broker_positions, "brokerPositions",
            "Snapshots of the broker's positions, keyed by account. Sent by the broker adapter "
            "(outside the ledger) after the executions they include; read by ingest, which "
            "compares each with the ledger at its head.", shape),
        "ledgerEvents": _channel(
            topics.ledger_events, "ledgerEvent",
            "Every committed event, per account in sequence order, keyed by account. Sent by the "
            "relay; read by the projector and by followers. A crash may repeat an event: "
            "deduplicate by account + sequence.", shape),
        "orderIntents": _channel(
            topics.order_intents, "orderIntent",
            "Intents live when published (not expired, not released, account not halted), and "
            "cancels of pending intents on halt, keyed by account. Sent by the relay; read by "
            "the order router (outside the ledger).",
            shape),
        "deadLetters": _channel(
            topics.dead_letters, "deadLetter",
            "Every message a consumer refused, with why; read by operators (outside the ledger).",
            shape),
    }


def _operation(action: str, channel: str, message: str, process: str, summary: str,
               group: JsonObject | None = None) -> JsonObject:
    operation: JsonObject = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        "title": process,
        "summary": summary,
        "tags": [{"name": process}],
    }
    if group is not None:
        operation["bindings"] = {"kafka": {"groupId": group,
                                           "bindingVersion": KAFKA_BINDING_VERSION}}
    return operation


def _group(name: str) -> JsonObject:
    return {"type": "string", "const": name}


def _operations() -> JsonObject:
    ingest_run, watch_run = "ledger run ingest", "ledger run ingest (signal watch)"
    dispatcher_run, projector_run = "ledger run dispatcher", "ledger run projector"
    relay_run, follow_run = "ledger run relay", "ledger follow"
    dispatcher_group = {"type": "string", "description": "One group per account.",
                        "pattern": f"^{_dispatcher_groups()}$"}
    return {
        "ingestExecutions": _operation(
            "receive", "executions", "execution", ingest_run,
            "Validates each execution and appends the valid ones to the store; offsets are "
            "committed after the database commit.", _group(ingest.CONSUMER_GROUP)),
        "refuseExecutions": _operation(
            "send", "deadLetters", "deadLetter", ingest_run,
            "Dead-letters a malformed or invalid execution, or one of an unknown account."),
        "reconcilePositions": _operation(
            "receive", "brokerPositions", "brokerPositions", ingest_run,
            "Once the executions on `executions` when a view arrived are recorded, compares it "
            "with the ledger at its head and appends PositionsReconciled or "
            "ReconciliationFailed (the account goes to reducing); one outcome per broker as_of.",
            _group(ingest.RECONCILE_GROUP)),
        "refusePositions": _operation(
            "send", "deadLetters", "deadLetter", ingest_run,
            "Dead-letters a malformed broker view, or one of an unknown account."),
        "watchSignals": _operation(
            "receive", "signals", "signal", watch_run,
            "Reads every key, so that no signal disappears.", _group(signal_watch.CONSUMER_GROUP)),
        "refuseSignals": _operation(
            "send", "deadLetters", "deadLetter", watch_run,
            "Dead-letters an invalid signal, one of an unknown account, and one no dispatcher "
            "decided within LEDGER_SIGNAL_GRACE_S."),
        "dispatchSignals": _operation(
            "receive", "signals", "signal", dispatcher_run,
            "Decides its own account's signals (other keys are skipped) and appends the "
            "decision and any intent to the store.", dispatcher_group),
        "refuseDecisions": _operation(
            "send", "deadLetters", "deadLetter", dispatcher_run,
            "Dead-letters a valid signal it failed to decide; nothing was committed for it."),
        "publishLedgerEvents": _operation(
            "send", "ledgerEvents", "ledgerEvent", relay_run,
            "Publishes every committed event, per account in sequence order."),
        "routeOrderIntents": _operation(
            "send", "orderIntents", "orderIntent", relay_run,
            "Publishes an IntentIssued again here while it is live."),
        "projectLedgerEvents": _operation(
            "receive", "ledgerEvents", "ledgerEvent", projector_run,
            "Folds events into the per-account projection tables.",
            _group(projector.CONSUMER_GROUP)),
        "refuseLedgerEvents": _operation(
            "send", "deadLetters", "deadLetter", projector_run,
            "Dead-letters what cannot be applied (a sequence beyond the store's head, say)."),
        "followLedgerEvents": _operation(
            "receive", "ledgerEvents", "ledgerEvent", follow_run,
            "Uses the topic only as a wake-up (no consumer group): what it yields is read from "
            "the store."),
    }


def document(settings: Settings) -> JsonObject:
    """Return the AsyncAPI 3.0 document of the ledger configured by `settings`."""
    topics = Topics.from_settings(settings)
    schemas = _Schemas()
    messages = _messages(topics, schemas)
    servers = {f"bootstrap{index}": {"host": host.strip(), "protocol": "kafka",
                                     "description": "A bootstrap server (LEDGER_KAFKA_BOOTSTRAP)."}
               for index, host in enumerate(settings.kafka_bootstrap.split(","), start=1)}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Position ledger",
            "version": DOCUMENT_VERSION,
            "description": "Kafka distributes, PostgreSQL decides: executions and signals in, "
                           "committed ledger events and live order intents out, every refused "
                           "message in dead-letters. Every topic name carries the prefix "
                           f"LEDGER_TOPIC_PREFIX ({settings.topic_prefix!r} here). Money and "
                           "quantities are decimals written as JSON strings of plain digits "
                           "(\"6.00\"); a JSON float is refused.",
        },
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": _channels(topics, (settings.topic_partitions,
                                       min(REPLICAS_MAX, settings.kafka_brokers))),
        "operations": _operations(),
        "components": {"messages": messages, "schemas": schemas.finish()},
    }


def describe(settings: Settings) -> str:
    """Return the AsyncAPI 3.0 document, as JSON."""
    return json.dumps(document(settings), indent=2)
