"""Goal: what ops/ ships works: Prometheus accepts its configuration and alert rules, the rules'
unit tests pass and give every alert a case where it fires and one where it must not, every
metric and label a rule or a dashboard panel names is one the processes export, and the Grafana
dashboard is well formed; ops/README.md lists the alerts as the rules define them.

Method: promtool (Debian package `prometheus`, which .ci/run installs) checks the rules, the
configuration and the dashboard's expressions, and runs the rule tests; these tests fail, not
skip, without it. The exported series are those prometheus-client's default registry describes
once ledger.metrics is imported, named as they are scraped (a counter family `x` as `x_total`, a
histogram as `x_bucket`, `x_sum` and `x_count`), with the label names of ledger.metrics' objects.
A small PromQL tokenizer finds the metric names, their selectors' labels and the labels of
`by`/`without` (checked against the aggregated expression) and `on`/`ignoring` clauses (checked
against the whole expression); it is tested on wrong expressions here too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from ledger import metrics

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
PROMETHEUS_CONFIG = OPS / "prometheus" / "prometheus.yml"
RULES = OPS / "prometheus" / "rules" / "ledger.rules.yml"
RULE_TESTS = OPS / "prometheus" / "tests" / "ledger.rules.test.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "ledger.json"
DATASOURCES = OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
README = OPS / "README.md"
PROMTOOL_TIMEOUT_S = 60

SEVERITIES = {"page", "ticket"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up": frozenset[str]()}
# The sample names prometheus-client exports for a family, by the family's type.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}
# Grafana's own variables, which an expression may use besides the dashboard's.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
# What a Grafana variable stands for when promtool checks a panel's expression.
VARIABLE_STANDINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
GRID_COLUMNS = 24


# ------------------------------------------------------------------ promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed. It comes with the Debian package `prometheus` "
                    "(apt-get install prometheus), which .ci/run installs; these tests fail "
                    "rather than skip so that no run passes without checking ops/prometheus.")
    return found


def _promtool(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False,
                            timeout=PROMTOOL_TIMEOUT_S, cwd=ROOT)
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def test_promtool_accepts_the_rules(promtool: str) -> None:
    _promtool(promtool, "check", "rules", str(RULES))


def test_promtool_rule_tests_pass(promtool: str) -> None:
    _promtool(promtool, "test", "rules", str(RULE_TESTS))


def test_promtool_accepts_the_configuration_and_finds_the_rules(promtool: str) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    # Relative to the configuration file, as promtool and the container both resolve them.
    loaded = {(PROMETHEUS_CONFIG.parent / pattern).resolve()
              for pattern in config["rule_files"]}
    assert RULES in loaded, f"{PROMETHEUS_CONFIG} does not load {RULES}"
    _promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_accepts_every_dashboard_expression(promtool: str, tmp_path: Path) -> None:
    # As recording rules of a scratch file, Grafana's variables replaced by what they stand for.
    rules = [{"record": f"dashboard:expression:{index}", "expr": _standin(expr)}
             for index, (_, expr) in enumerate(_dashboard_expressions())]
    scratch = tmp_path / "dashboard.rules.yml"
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool(promtool, "check", "rules", str(scratch))


def _standin(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return VARIABLE_STANDINS.get(name, ".+")
    return re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)", value, expr)


# ------------------------------------------------------------------ the rules and their tests


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] not in found, f"{rule['alert']} is defined twice"
            found[rule["alert"]] = rule
    return found


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert [(RULE_TESTS.parent / path).resolve() for path in tests["rule_files"]] == [RULES]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert alerts, "the rules define no alert"
    # A misspelt name in a quiet case would pass promtool while testing nothing.
    assert (fires | quiet) <= alerts, f"cases of no alert: {(fires | quiet) - alerts}"
    assert not alerts - fires, f"no case where these fire: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"no case where these stay quiet: {sorted(alerts - quiet)}"


def test_every_alert_says_how_long_how_bad_and_what() -> None:
    catalogue = _catalogue()
    for name, rule in _alerts().items():
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no `for`"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        # An alert about accounts names the account.
        references = _parse(rule["expr"]).references
        if references and all("account" in catalogue.get(reference.name, ())
                              for reference in references):
            assert "$labels.account" in annotations["summary"], name
            assert "$labels.account" in annotations["description"], name


def test_ops_readme_lists_every_alert_as_the_rules_define_it() -> None:
    # | `Name` | fires when | threshold | for | severity |
    row = re.compile(r"^\| `(?P<name>Ledger\w+)` \|[^|]*\|[^|]*\| (?P<for>[^|]+?) \| "
                     r"(?P<severity>\w+) \|$")
    listed = {match["name"]: (match["for"], match["severity"])
              for line in README.read_text().splitlines() if (match := row.match(line))}
    defined = {name: (str(rule["for"]), rule["labels"]["severity"])
               for name, rule in _alerts().items()}
    assert listed == defined


# ------------------------------------------------------------------ what the processes export


def _catalogue() -> dict[str, frozenset[str]]:
    """Every series name the processes export, with its label names (not job and instance)."""
    declared = {value._name: frozenset(value._labelnames) for value in vars(metrics).values()
                if isinstance(value, MetricWrapperBase)}
    found: dict[str, frozenset[str]] = dict(PROMETHEUS_SERIES)
    for family in REGISTRY.collect():
        labels = set(declared.get(family.name, ()))
        for sample in family.samples:
            labels |= set(sample.labels) - {"le", "quantile"}
        for suffix in SUFFIXES[family.type]:
            extra = ({"le"} if suffix == "_bucket" else
                     {"quantile"} if family.type == "summary" and not suffix else set())
            found[family.name + suffix] = frozenset(labels | extra)
        for sample in family.samples:
            found.setdefault(sample.name, frozenset(labels | set(sample.labels)))
    return found


def test_the_catalogue_names_series_as_they_are_scraped() -> None:
    catalogue = _catalogue()
    assert catalogue["ledger_events_appended_total"] == {"process"}
    assert "ledger_events_appended" not in catalogue
    assert catalogue["ledger_decision_seconds_bucket"] == {"account", "le"}
    assert catalogue["ledger_decision_seconds_count"] == {"account"}
    assert "ledger_decision_seconds" not in catalogue
    assert catalogue["ledger_account_limit"] == {"account", "limit"}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            assert any(name.startswith(value._name) for name in catalogue), value._name


# ------------------------------------------------------------------ a small PromQL reader


_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
  | (?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>[({])
  | (?P<close>[)}])
  | (?P<operator>=~|!~|==|!=|>=|<=|[-+*/%^<>=@,])
  | (?P<space>\s+)
""", re.VERBOSE)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"}
_MATCH_OPERATORS = {"=", "!=", "=~", "!~"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass
class Reference:
    """A metric a selector names, with its label matchers: label -> (operator, value)."""

    name: str
    position: int
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Grouping:
    """A by/without/on/ignoring/group_* clause and the references it applies to."""

    keyword: str
    labels: list[str]
    scope: list[Reference]


@dataclass
class Parsed:
    references: list[Reference]
    groupings: list[Grouping]


def _tokens(expr: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None or match.lastgroup is None:
            pytest.fail(f"cannot read {expr[position:position + 20]!r} in {expr!r}")
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup, match.group()))
        position = match.end()
    return tokens


def _pairs(tokens: list[Token]) -> dict[int, int]:
    """Index of each bracket -> index of its partner, both ways."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, token in enumerate(tokens):
        if token.kind == "open":
            stack.append(index)
        elif token.kind == "close":
            assert stack, f"unbalanced {token.text}"
            opened = stack.pop()
            assert tokens[opened].text + token.text in ("()", "{}"), "mismatched brackets"
            pairs[opened], pairs[index] = index, opened
    assert not stack, "unbalanced brackets"
    return pairs


def _unquote(text: str) -> str:
    return text[1:-1]


def _parse(expr: str) -> Parsed:
    tokens = _tokens(expr)
    pairs = _pairs(tokens)
    references: list[Reference] = []
    clauses: list[tuple[str, list[str], tuple[int, int] | None]] = []

    def following(index: int) -> Token | None:
        return tokens[index + 1] if index + 1 < len(tokens) else None

    index = 0
    while index < len(tokens):
        token = tokens[index]
        after = following(index)
        if token.kind == "identifier" and token.text.lower() in _GROUPING and (
                after is not None and after.text == "("):
            close = pairs[index + 1]
            labels = [t.text for t in tokens[index + 2:close] if t.kind == "identifier"]
            clauses.append((token.text.lower(), labels, _aggregated(tokens, pairs, index, close)))
            index = close + 1
            continue
        if token.kind == "identifier" and token.text.lower() not in _KEYWORDS and not (
                after is not None and (after.text == "(" or after.text in ("by", "without"))):
            reference = Reference(token.text, index)
            if after is not None and after.text == "{":
                close = pairs[index + 1]
                body = tokens[index + 2:close]
                for at, label in enumerate(body[:-2]):
                    if label.kind == "identifier" and body[at + 1].text in _MATCH_OPERATORS:
                        reference.matchers[label.text] = (body[at + 1].text,
                                                          _unquote(body[at + 2].text))
                index = close
            references.append(reference)
        elif token.text == "{":
            pytest.fail(f"a selector without a metric name in {expr!r}")
        index += 1
    groupings = []
    for keyword, labels, span in clauses:
        scope = references if span is None else [
            reference for reference in references if span[0] < reference.position < span[1]]
        groupings.append(Grouping(keyword, labels, scope))
    return Parsed(references, groupings)


def _aggregated(tokens: list[Token], pairs: dict[int, int], keyword: int,
                close: int) -> tuple[int, int] | None:
    """The span of the expression a by/without clause aggregates; None for on/ignoring."""
    if tokens[keyword].text.lower() not in ("by", "without"):
        return None
    if tokens[keyword - 1].kind == "identifier":
        # sum by (labels) (expression)
        return close + 1, pairs[close + 1]
    # sum (expression) by (labels)
    return pairs[keyword - 1], keyword - 1


def _problems(expr: str, catalogue: dict[str, frozenset[str]]) -> list[str]:
    """What in an expression names a series or a label the processes do not export."""
    parsed = _parse(expr)
    problems = []

    def labels_of(reference: Reference) -> frozenset[str]:
        return catalogue.get(reference.name, frozenset()) | TARGET_LABELS

    for reference in parsed.references:
        if reference.name not in catalogue:
            problems.append(f"{reference.name} is exported by no process")
            continue
        unknown = set(reference.matchers) - labels_of(reference) - {"__name__"}
        if unknown:
            problems.append(f"{reference.name} has no label {sorted(unknown)}")
    for grouping in parsed.groupings:
        known = [labels_of(reference) for reference in grouping.scope
                 if reference.name in catalogue]
        if not known:
            continue
        for label in grouping.labels:
            # by/on need the label on every side; without/ignoring/group_* on one at least.
            if grouping.keyword in ("by", "on"):
                ok = all(label in labels for labels in known)
            else:
                ok = any(label in labels for labels in known)
            if not ok:
                problems.append(f"{grouping.keyword} ({label}): not a label of "
                                f"{sorted({r.name for r in grouping.scope})}")
    return problems


@pytest.mark.parametrize(("expr", "wrong"), [
    ("ledger_projection_lag_event > 100", "ledger_projection_lag_event is exported"),
    ("ledger_events_appended > 0", "ledger_events_appended is exported"),
    ("ledger_decision_seconds > 0", "ledger_decision_seconds is exported"),
    ('ledger_account_limit{limits="max_exposure"}', "has no label ['limits']"),
    ('rate(ledger_decisions_total{outcome="blocked", acount="a"}[5m])', "has no label"),
    ("sum by (gate) (rate(ledger_events_published_total[5m]))", "by (gate)"),
    ("sum(rate(ledger_events_published_total[5m])) by (account)", "by (account)"),
    ("histogram_quantile(0.9, sum by (account, le) (rate(ledger_append_seconds_bucket[5m])))",
     "by (account)"),
    ("ledger_account_exposure_dollars / on(limit) ledger_account_limit", "on (limit)"),
    ("ledger_events_published_total / ignoring(consumer) ledger_events_projected_total",
     "ignoring (consumer)"),
])
def test_the_reader_finds_unknown_metrics_and_labels(expr: str, wrong: str) -> None:
    problems = _problems(expr, _catalogue())
    assert any(wrong in problem for problem in problems), problems


@pytest.mark.parametrize("expr", [
    'sum by (gate) (rate(ledger_decisions_total{outcome="blocked"}[$__rate_interval]))',
    "max by (account) (ledger_account_exposure_dollars) / on(account) "
    'max by (account) (ledger_account_limit{limit="max_exposure"}) > 0.9',
    "histogram_quantile(0.99, sum by (le, job) (rate(ledger_append_seconds_bucket[5m])))",
    'up{job=~"ledger-.*", instance!=""} == 0',
    "increase(ledger_dead_letters_total[5m]) > 0 or "
    "(ledger_dead_letters_total unless ledger_dead_letters_total offset 5m)",
    "ledger_account_limit / ignoring(limit) group_left ledger_account_exposure_dollars",
    "sum without (limit) (ledger_account_limit) * 1e3",
])
def test_the_reader_takes_what_the_processes_export(expr: str) -> None:
    assert _problems(expr, _catalogue()) == []


def test_every_rule_names_exported_series_and_labels() -> None:
    catalogue = _catalogue()
    recorded = {rule["record"]: frozenset[str]() for rule in _rules() if "record" in rule}
    problems = [f"{rule.get('alert') or rule.get('record')}: {problem}"
                for rule in _rules()
                for problem in _problems(rule["expr"], {**catalogue, **recorded})]
    assert problems == []


# ------------------------------------------------------------------ the dashboard


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from _panels(panel)


def _dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) of every target."""
    return [(panel["title"], target["expr"]) for panel in _panels(_dashboard())
            for target in panel.get("targets", [])]


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"], "no uid"
    assert dashboard["title"], "no title"
    assert dashboard["schemaVersion"] >= 39
    panels = list(_panels(dashboard))
    assert panels, "no panel"
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel.get("title", "")
        assert title.strip(), f"panel {panel['id']} has no title"
        targets = panel.get("targets", [])
        assert targets, f"{title}: no target"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), f"{title}: refIds repeat"
        assert all(target.get("expr", "").strip() for target in targets), f"{title}: no expr"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, f"{title}: wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = title


def test_the_dashboard_reads_the_provisioned_datasource() -> None:
    [provisioned] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    dashboard = _dashboard()
    used = [panel["datasource"] for panel in _panels(dashboard)]
    used += [target["datasource"] for panel in _panels(dashboard)
             for target in panel["targets"]]
    used += [variable["datasource"] for variable in dashboard["templating"]["list"]
             if variable["type"] == "query"]
    assert used
    for datasource in used:
        assert datasource == {"type": provisioned["type"], "uid": provisioned["uid"]}


def test_every_panel_and_variable_names_exported_series_and_labels() -> None:
    catalogue = _catalogue()
    problems = [f"{title}: {problem}" for title, expr in _dashboard_expressions()
                for problem in _problems(expr, catalogue)]
    for variable in _dashboard()["templating"]["list"]:
        query = _variable_query(variable)
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match is not None, f"${variable['name']}: {query} is not label_values(...)"
        selector, label = match.groups()
        problems += [f"${variable['name']}: {problem}"
                     for problem in _problems(selector, catalogue)]
        for reference in _parse(selector).references:
            if label not in catalogue.get(reference.name, ()):
                problems.append(f"${variable['name']}: {reference.name} has no label {label}")
    assert problems == []


def test_the_account_variable_filters_every_account_panel() -> None:
    dashboard = _dashboard()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert _variable_query(variables["account"]) == (
        "label_values(ledger_account_exposure_dollars, account)")
    catalogue = _catalogue()
    for title, expr in _dashboard_expressions():
        used = {name for pair in re.findall(r"\$\{(\w+)|\$(\w+)", expr) for name in pair if name}
        assert used <= set(variables) | GRAFANA_VARIABLES, f"{title}: {used}"
        for reference in _parse(expr).references:
            if "account" in catalogue.get(reference.name, ()):
                assert reference.matchers.get("account") == ("=~", "$account"), (
                    f"{title}: {reference.name} is not filtered by $account")
