"""Goal: docs/metrics.md lists exactly the metrics ledger/metrics.py defines, with their types and
labels, and no label can take a value per symbol, id or sequence.

Method: parse the catalogue table of the document; walk the module's metric objects.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from ledger import metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# Every label a metric may carry: each has a value per account or a small fixed set of values.
BOUNDED_LABELS = {"account", "process", "outcome", "gate", "consumer", "limit", "state", "child"}
ROW = re.compile(r"^\| `(?P<name>ledger_[a-z_]+)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        if (match := ROW.match(line)) is not None:
            labels = frozenset(label.strip() for label in match["labels"].split(",")
                               if label.strip())
            assert match["name"] not in rows, f"{match['name']} is documented twice"
            rows[match["name"]] = (match["type"], labels)
    return rows


def defined() -> dict[str, tuple[str, frozenset[str]]]:
    found = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        kind = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}[type(value)]
        # prometheus-client keeps a counter's name without `_total`; it exports it with.
        name = value._name + ("_total" if kind == "counter" else "")
        found[name] = (kind, frozenset(value._labelnames))
    return found


def test_the_catalogue_in_docs_is_the_metrics_module() -> None:
    assert len(defined()) >= 26
    assert documented() == defined()


def test_every_label_is_bounded() -> None:
    for name, (_, labels) in defined().items():
        assert labels <= BOUNDED_LABELS, f"{name} has an unbounded label: {labels}"
