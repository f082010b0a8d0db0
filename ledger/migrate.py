"""Forward-only schema migrations: numbered SQL files applied in order, each in a transaction.

A migration file is `migrations/NNNN_name.sql`, package data of the top-level `migrations` package:
the runner finds the files through `importlib.resources`, so an installed wheel finds its own
whatever the working directory, and finding none is an error, never "up to date". What was applied
is recorded in `schema_migrations` with the file's checksum, so a second run changes nothing and an
applied file that was edited afterwards is refused. A file may name this ledger's roles as
`@owner@`, `@ingest@`, ... (see `ledger.roles.Roles.placeholders`): the runner writes their quoted
names in before running it, and the checksum is of the file as written. A file may `SET LOCAL
ROLE`; the runner resets the role before recording it. Must not import Kafka clients or the CLI.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from ledger.errors import MigrationError, NoMigrationsFound

MIGRATIONS_PACKAGE = "migrations"
_FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")
# Any constant works: it only has to be the same for every `ledger migrate` against one database.
_MIGRATION_LOCK_KEY = 0x1ED6E5


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def rendered(self, placeholders: Mapping[str, str]) -> str:
        """Return the SQL with every @name@ replaced by its value.

        Raises:
            MigrationError: the file names a placeholder that has no value.
        """
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in placeholders:
                raise MigrationError(f"migration {self.version:04d}_{self.name} names "
                                     f"@{name}@, which has no value")
            return placeholders[name]

        return _PLACEHOLDER.sub(value, self.sql)


def migrations_dir() -> Traversable:
    """Return where the installed `migrations` package keeps its SQL files.

    Raises:
        NoMigrationsFound: the package is not installed.
    """
    try:
        return resources.files(MIGRATIONS_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name != MIGRATIONS_PACKAGE:
            raise
        raise NoMigrationsFound(f"package {MIGRATIONS_PACKAGE!r} (it is not installed)") from None


def discover(directory: Traversable | None = None) -> list[Migration]:
    """Return the migrations in a directory (the installed package's by default), in version order.

    Raises:
        NoMigrationsFound: the directory is missing or holds no .sql file.
        MigrationError: a file name does not match NNNN_name.sql or two files share a number.
    """
    if directory is None:
        directory = migrations_dir()
    if not directory.is_dir():
        raise NoMigrationsFound(str(directory))
    files = sorted((entry for entry in directory.iterdir()
                    if entry.name.endswith(".sql") and entry.is_file()),
                   key=lambda entry: entry.name)
    if not files:
        raise NoMigrationsFound(str(directory))
    migrations: dict[int, Migration] = {}
    for path in files:
        match = _FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} does not match NNNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"migration number {version:04d} is used twice: {path.name!r}")
        migrations[version] = Migration(version=version, name=match.group(2),
                                        sql=path.read_text(encoding="utf-8"))
    return [migrations[version] for version in sorted(migrations)]


async def apply(conn: asyncpg.Connection, directory: Traversable | None = None,
                placeholders: Mapping[str, str] | None = None) -> list[Migration]:
    """Apply the missing migrations in order and return those applied by this call.

    Raises:
        NoMigrationsFound: there is no migration to apply from (checked before any change).
        MigrationError: an applied migration's file changed, a migration failed (rolled back),
            or a migration names a placeholder without a value.
    """
    found = discover(directory)
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    applied: list[Migration] = []
    for migration in found:
        async with conn.transaction():
            # Two `ledger migrate` runs at once must not both apply a file: serialise on a lock
            # held until this migration's transaction ends, then look again.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            recorded = await conn.fetchval(
                "SELECT checksum FROM schema_migrations WHERE version = $1", migration.version
            )
            if recorded is not None:
                if not await _accept_comment_edit(conn, migration, recorded):
                    _check_unchanged(migration, recorded)
                continue
            try:
                await conn.execute(migration.rendered(placeholders or {}))
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            await conn.execute("RESET ROLE")
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
            applied.append(migration)
    return applied


# Applied files edited in comments only, by the checksums they had: a database migrated
# before the edit is not refused for it, and its record is brought up to date.
COMMENT_ONLY_EDITS: dict[tuple[int, str], str] = {
    # 0001's and 0010's comments cite docs/design.md (commit 1d5415c).
    (1, "75fc8befeb26128d030341a0373b7acbf3279e1e90036a2aea1a09f7978fb630"): "comment cites docs",
    (10, "809b6d8e52fb68c15b41543980fe9461a2bf922ac39247ec0a6843cec403ce06"): "comment cites docs",
}


async def _accept_comment_edit(conn: asyncpg.Connection, migration: Migration,
                               recorded_checksum: str) -> bool:
    """Bring the record of a known comment-only edit up to date; False if it is not one."""
    if (migration.version, recorded_checksum) not in COMMENT_ONLY_EDITS:
        return False
    await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1",
                       migration.version, migration.checksum)
    return True


def _check_unchanged(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was edited after it was "
            f"applied: checksum {migration.checksum[:12]} but the database recorded "
            f"{recorded_checksum[:12]}; add a new migration instead"
        )
