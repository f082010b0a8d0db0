"""The built wheel carries its migrations: `ledger migrate` from an installed, non-editable copy.

Goal: a wheel installed anywhere migrates a fresh database completely, and an installation whose
migrations are missing fails with one line instead of reporting "schema is up to date". Method:
build the wheel once from a copy of the project's sources, install it without dependencies into
fresh virtual environments, and run their `ledger` with the working directory outside the checkout
and no PYTHONPATH, so nothing of the checkout can be imported; an installation is broken by
deleting its migration files or its whole `migrations` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger import migrate, roles
from ledger.db import connect
from ledger.settings import Settings
from tests.conftest import cli_env

pytestmark = [pytest.mark.pg, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BUILD_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in")
STEP_TIMEOUT_S = 120
MISSING_MESSAGE = "the installation is incomplete, reinstall position-ledger"


@dataclass(frozen=True, kw_only=True)
class Installed:
    """A virtual environment with the wheel installed: its `ledger` and its own site-packages."""

    ledger: Path
    python: Path
    site_packages: Path


def _clean_env(base: dict[str, str]) -> dict[str, str]:
    """Return `base` without what would let a process import the checkout or another install."""
    env = {key: value for key, value in base.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LEDGER_DEBUG")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _step(args: list[str | Path], cwd: Path) -> str:
    """Run one build or install step; fail the test with its output if it fails."""
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=_clean_env(dict(os.environ)),
                            capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _copy_sources(dest: Path) -> Path:
    """Copy the build configuration and every top-level package of the checkout to `dest`.

    The wheel is built from a copy because setuptools builds in the source tree: it would write
    build/ and *.egg-info into the shared checkout, and a stale build/lib there goes into the
    wheel, which could hide the very omission this module tests. Which packages and data the
    wheel takes is still decided by pyproject.toml alone.
    """
    dest.mkdir()
    for name in BUILD_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    for entry in ROOT.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and (entry / "__init__.py").is_file():
            shutil.copytree(entry, dest / entry.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the project's wheel (`pip wheel --no-deps`; build isolation fetches setuptools)."""
    work = tmp_path_factory.mktemp("wheel")
    source = _copy_sources(work / "src")
    dist = work / "dist"
    _step([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source],
          cwd=work)
    (built,) = dist.glob("position_ledger-*.whl")
    return built


@pytest.fixture(scope="module")
def install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Installed]:
    """Return a function that installs the wheel into a fresh virtual environment.

    Dependencies are not downloaded: the venv is created without pip and without system site
    packages, the wheel alone is installed into it (`--no-deps --no-index`, by the running pip
    through `--python`), and only then (earlier, pip would see the running venv's editable install
    of the same version) a .pth file appends the running venv's site-packages to its sys.path. A
    .pth line only appends a directory, so the wheel's own packages come first and the running
    venv's own .pth hooks (its editable install of this project) are never run.
    """
    dependencies = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])

    def make() -> Installed:
        venv = tmp_path_factory.mktemp("venv")
        _step([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
        python = venv / "bin" / "python"
        _step([sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
               "--no-deps", "--no-index", wheel], cwd=venv)
        site_packages = Path(_step(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            cwd=venv).strip())
        (site_packages / "running_venv_dependencies.pth").write_text(
            "".join(f"{path}\n" for path in dependencies))
        return Installed(ledger=venv / "bin" / "ledger", python=python,
                         site_packages=site_packages)

    return make


def _ledger(installed: Installed, settings: Settings, cwd: Path,
            *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `ledger` against the test database, from `cwd`, with no PYTHONPATH."""
    return subprocess.run([str(installed.ledger), *args], cwd=cwd,
                          env=_clean_env(cli_env(settings)), capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S, check=False)


def _imported_from(installed: Installed, cwd: Path, *modules: str) -> list[Path]:
    """Return the file each module is imported from by the installed interpreter, from `cwd`."""
    code = "import importlib, sys; print(*(importlib.import_module(m).__file__ for m in " \
           "sys.argv[1:]), sep='\\n')"
    out = _step([installed.python, "-c", code, *modules], cwd=cwd)
    return [Path(line) for line in out.splitlines()]


async def test_installed_wheel_migrate_creates_the_whole_schema_then_is_up_to_date(
    install: Callable[[], Installed], make_database: Callable[..., Awaitable[Settings]],
    tmp_path: Path,
) -> None:
    installed = install()
    settings = await make_database(migrated=False)
    expected = [f"{m.version:04d}_{m.name}" for m in migrate.discover(ROOT / "migrations")]

    sources = _imported_from(installed, tmp_path, "console.cli", "ledger.migrate", "migrations")
    first = _ledger(installed, settings, tmp_path, "migrate")
    second = _ledger(installed, settings, tmp_path, "migrate")
    conn = await connect(settings.database_url)
    try:
        events = await conn.fetchval("SELECT to_regclass('events')")
        recorded = [f"{row['version']:04d}_{row['name']}" for row in await conn.fetch(
            "SELECT version, name FROM schema_migrations ORDER BY version")
        ] if await conn.fetchval("SELECT to_regclass('schema_migrations')") else []
    finally:
        await conn.close()

    assert all(path.is_relative_to(installed.site_packages) for path in sources), sources
    assert first.returncode == 0, first.stderr
    applied = [line.removeprefix("applied ") for line in first.stdout.splitlines()
               if line.startswith("applied ")]
    assert applied == expected
    assert events is not None
    assert recorded == expected
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[0] == "schema is up to date"


@pytest.mark.parametrize("broken", ["sql_files_deleted", "package_deleted"])
async def test_installed_wheel_without_its_migrations_fails_with_one_line(
    install: Callable[[], Installed], make_database: Callable[..., Awaitable[Settings]],
    tmp_path: Path, broken: str,
) -> None:
    installed = install()
    package = installed.site_packages / "migrations"
    if broken == "sql_files_deleted":
        for path in package.glob("*.sql"):
            path.unlink()
        where = str(package)
    else:
        shutil.rmtree(package)
        where = "package 'migrations' (it is not installed)"
    settings = await make_database(migrated=False)

    result = _ledger(installed, settings, tmp_path, "migrate")
    label = roles.Roles(namespace="x", database=settings.database_url.rsplit("/", 1)[1]).label
    conn = await connect(settings.database_url)
    try:
        touched = await conn.fetchval("SELECT to_regclass('schema_migrations')")
        roles_created = await conn.fetchval(
            "SELECT count(*) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1", label)
    finally:
        await conn.close()

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ledger: error: no migrations found in {where}: {MISSING_MESSAGE}"]
    assert "up to date" not in result.stdout
    assert touched is None
    assert roles_created == 0
