"""Secrets kept in the workspace home: a random value written once (0600) and read by every process.

A setting (``session_secret``, ``alert_secret``) takes precedence. Without one, the first
process that needs the secret writes a random one into the home, and every worker and every
restart reads that same file: cookies stay valid across restarts and every worker of a
server signs webhook bodies alike.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from assay.errors import SettingsError


def home_secret(home: Path, file_name: str, configured: str | None, setting: str) -> bytes:
    """``configured`` when set, else the secret kept in ``home / file_name`` (made on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(home) / file_name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process wrote it first: use theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())  # a secret lost to a crash would sign out everyone
    secret = path.read_text().strip()
    if not secret:
        raise SettingsError(f"{path} is empty; delete it to have a new secret made", field=setting)
    return secret.encode("utf-8")
