"""The one frozen settings object, read from flags and the environment once at startup.

Defaults point at the local stack `make up` starts (stack/stack.sh), so nothing needs setting
locally; production sets every value explicitly. A bad value stops the process with a message that
names the variable and the value. Must not import the store, Kafka clients or the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.errors import ConfigError

ENV_PREFIX = "LEDGER_"
DEFAULT_DATABASE_URL = "postgresql://ledger_admin:ledger_admin@127.0.0.1:55432/ledger"
# The local stack's brokers listen on 9092, 9094, 9096 (stack/stack.sh); the default bootstrap
# names all of them, so a client still starts while one is down.
LOCAL_KAFKA_PORT = 9092
LOCAL_KAFKA_PORT_STEP = 2
KAFKA_ADMIN_USER = "ledger-admin"
DEFAULT_SECRETS_DIR = Path.home() / ".local" / "share" / "ledger" / "secrets"
DEFAULT_LOG_FILE = Path.home() / ".local" / "state" / "ledger" / "ledger.log"


class Settings(BaseSettings):
    """Effective configuration of one ledger process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # How many brokers the local stack runs (1 or 3); only the default bootstrap depends on it.
    kafka_brokers: int = Field(default=1, ge=1, le=3)
    kafka_bootstrap: str = ""
    # SASL_PLAINTEXT authenticates every client with SCRAM-SHA-512, as production does;
    # PLAINTEXT is for a cluster without authentication.
    kafka_security_protocol: Literal["SASL_PLAINTEXT", "PLAINTEXT"] = "SASL_PLAINTEXT"
    # The principal of CLI commands; each `ledger run` process uses its own (ledger/principals.py).
    # Its password is the first line of LEDGER_SECRETS_DIR/kafka_<user>.password.
    kafka_user: str = Field(default=KAFKA_ADMIN_USER, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    topic_prefix: str = ""
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    # How long a consumer may be silent before its group moves its partitions to another member.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    # How often the busiest consumers (dispatchers, projector) commit their offsets: a restart
    # reads again at most this much, recognised and skipped (docs/performance.md).
    kafka_commit_interval_s: float = Field(default=1.0, ge=0, le=3_600)
    # How many events a dispatcher may fold from the store to prove its view current.
    dispatcher_fold_bound: int = Field(default=1_000, ge=0, le=1_000_000)
    # How long an issued intent reserves its share of the limits before it expires.
    intent_ttl_s: float = Field(default=60.0, gt=0, le=86_400)
    # How old a signal may be when a running dispatcher decides it (gate signal_stale).
    signal_max_age_s: float = Field(default=10.0, gt=0, le=86_400)
    # How long a signal may wait for its dispatcher's decision before the watch dead-letters it.
    signal_grace_s: float = Field(default=30.0, gt=0, le=86_400)
    # How far in the future an event or a signal may say it occurred (clocks disagree a little).
    max_clock_skew_s: float = Field(default=300.0, ge=0, le=86_400)
    # Where `ledger run ...` serves Prometheus metrics; port 0 serves nothing. Loopback by
    # default; a container that Prometheus scrapes from another one sets 0.0.0.0.
    metrics_port: int = Field(default=0, ge=0, le=65_535)
    metrics_host: str = Field(default="127.0.0.1", pattern=r"^[0-9A-Za-z.:-]{1,253}$")
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    # Where `ledger run` writes every log line, the libraries' (aiokafka, faststream) included;
    # its console shows only the ledger's own. "-": everything to the console.
    log_file: str = str(DEFAULT_LOG_FILE)
    # The namespace of this ledger's PostgreSQL roles (ledger/roles.py); None: the database name.
    role_prefix: str | None = None

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("expected postgresql://user:password@host:port/database")
        return value

    @field_validator("kafka_brokers")
    @classmethod
    def _one_or_three(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError("expected 1 or 3 (the local stack's cluster sizes)")
        return value

    @model_validator(mode="after")
    def _default_bootstrap(self) -> Settings:
        if not self.kafka_bootstrap:
            ports = (LOCAL_KAFKA_PORT + LOCAL_KAFKA_PORT_STEP * node
                     for node in range(self.kafka_brokers))
            # Frozen model: the derived default is set once, before anyone reads it.
            object.__setattr__(self, "kafka_bootstrap",
                               ",".join(f"127.0.0.1:{port}" for port in ports))
        return self

    @property
    def kafka_servers(self) -> list[str]:
        """The bootstrap addresses as clients take them (a list; one string is one address)."""
        return [server.strip() for server in self.kafka_bootstrap.split(",") if server.strip()]

    def topic(self, name: str) -> str:
        """Return the full name of a topic, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def log_path(self) -> Path | None:
        """Return the log file, or None when everything goes to the console."""
        return None if self.log_file == "-" else Path(self.log_file)

    def as_lines(self) -> list[str]:
        """Render the settings as KEY=VALUE lines, passwords masked."""
        values: dict[str, Any] = self.model_dump()
        values["database_url"] = mask_password(self.database_url)
        return [f"{ENV_PREFIX}{key.upper()}={value}" for key, value in values.items()]


def mask_password(dsn: str) -> str:
    """Return the DSN with its password replaced by ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with explicit flag values taking precedence.

    Raises:
        ConfigError: a variable holds a value that does not parse or is out of range.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        raise ConfigError(variable, error.get("input"), error["msg"]) from None
