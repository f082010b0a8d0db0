"""Passwords of the ledger's login roles, kept for local use in files only their owner can read.

One file per role under the secrets directory (mode 0600, directory 0700). Production passes its
own password files instead. Must not import the store, Kafka clients or the CLI.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ledger.errors import ConfigError

PASSWORD_BYTES = 24
FILE_MODE = 0o600
DIR_MODE = 0o700


def password_path(secrets_dir: Path, role: str) -> Path:
    """Return the file that holds a role's password."""
    return secrets_dir / f"{role}.password"


def read_password_file(path: Path) -> str:
    """Return the password in a file (first line, stripped).

    Raises:
        ConfigError: the file is missing, empty, or readable by others than its owner.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError("password file", str(path), f"a readable file ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("password file", str(path), "a file readable only by its owner (0600)")
    if not text or not text[0]:
        raise ConfigError("password file", str(path), "a non-empty first line")
    return text[0]


def replace_password(secrets_dir: Path, role: str, password: str | None = None) -> str:
    """Store a new password for the role (generated unless given) in place of the old; return it.

    The file is replaced atomically: a reader sees the old password or the new, never half.
    """
    _ensure_dir(secrets_dir)
    password = secrets.token_urlsafe(PASSWORD_BYTES) if password is None else password
    path = password_path(secrets_dir, role)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    os.replace(staging, path)
    return password


def _ensure_dir(secrets_dir: Path) -> None:
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(secrets_dir, DIR_MODE)


def load_or_create_password(secrets_dir: Path, role: str) -> str:
    """Return the role's stored password, generating and storing one if there is none."""
    path = password_path(secrets_dir, role)
    if path.exists():
        return read_password_file(path)
    _ensure_dir(secrets_dir)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    # O_EXCL: two processes creating the same role's password at once must not both win.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return read_password_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password
