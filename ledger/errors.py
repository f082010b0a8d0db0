"""The ledger's exception tree: one base, subclasses that say what the caller should do.

Every message is one line naming the field or object, the value, and what was expected, and keeps
the values as attributes so callers never parse text. This module imports nothing of the project.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose; the CLI prints it as one line, exit 1."""


class ConfigError(LedgerError):
    """A setting is missing or invalid: fix the configuration and start again."""

    def __init__(self, variable: str, value: object, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        super().__init__(f"{variable}={value!r} is invalid: expected {expected}")


class InvalidEvent(LedgerError):
    """An event, signal or input line is malformed or invalid: reject it, never store it."""

    def __init__(self, field: str, value: object, expected: str, line: int | None = None) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{field}: {value!r} {expected}")

    def at_line(self, line: int) -> InvalidEvent:
        """Return the same error located at a line of an input file."""
        return InvalidEvent(self.field, self.value, self.expected, line=line)


class InvalidAccountName(LedgerError):
    """An account name is not safe to use in a role name: choose another."""

    def __init__(self, name: str, pattern: str) -> None:
        self.name = name
        self.pattern = pattern
        super().__init__(f"account name {name!r} is invalid: expected to match {pattern}")


class UnknownAccount(LedgerError):
    """An event names an account that has no stream: add the account first."""

    def __init__(self, account: str) -> None:
        self.account = account
        super().__init__(
            f"account {account!r} does not exist: run `ledger accounts add {account}` first"
        )


class ConcurrencyConflict(LedgerError):
    """The stream moved on since the caller read it: read again and retry."""

    def __init__(self, account: str, expected_sequence: int, actual_sequence: int) -> None:
        self.account = account
        self.expected_sequence = expected_sequence
        self.actual_sequence = actual_sequence
        super().__init__(
            f"expected_sequence={expected_sequence} but stream {account} "
            f"is at sequence={actual_sequence}"
        )


class AppendRefused(LedgerError):
    """The database refused an append: the caller's role may not write it, or it is malformed.

    Not retryable: the same append is refused again. `permitted` tells the two apart (True: the
    role may write, but the events are malformed).
    """

    def __init__(self, account: str, reason: str, *, permitted: bool) -> None:
        self.account = account
        self.reason = reason
        self.permitted = permitted
        super().__init__(reason)


class ProjectionBehind(LedgerError):
    """The projection is further behind the head than a reader may fold: run the projector."""

    def __init__(self, account: str, lag: int, fold_bound: int) -> None:
        self.account = account
        self.lag = lag
        self.fold_bound = fold_bound
        super().__init__(
            f"projection of {account} is {lag} events behind the head (more than the "
            f"{fold_bound} a read may fold); run the projector or `ledger rebuild`")


class StoreUnavailable(LedgerError):
    """PostgreSQL cannot be reached or refused the connection: retry later or fix the DSN."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"database at {target} is unavailable: {reason}")


class MigrationError(LedgerError):
    """A migration file is missing, out of order or failed: fix the migrations directory."""


class NoMigrationsFound(MigrationError):
    """No migration file where the installed package keeps them: the installation is incomplete.

    Never "schema is up to date": reinstall the package (its wheel ships `migrations/*.sql`).
    """

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(f"no migrations found in {location}: the installation is incomplete, "
                         "reinstall position-ledger")
