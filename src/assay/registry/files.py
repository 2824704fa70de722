"""Safe files: hashes, manifests, atomic writes, versioned JSON headers and work folders.

Shared by artifacts (one version's files) and bundles (one file holding a version):

* ``sha256_file`` / ``write_json`` / ``write_file``, the hashing and writing manifests use,
  and the checks (``check_manifest``, ``check_regular``, ``check_hash``, ``is_safe_name``,
  ``atomic_output``, ``json_bytes``, ``parse_header``) an untrusted file goes through;
* ``WorkDir`` / ``remove_stale_workdirs``: folders a process fills before publishing them,
  locked while in use, so that those a killed process left behind can be told apart and removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from assay.errors import ArtifactError

# The name of a bundle's header entry (see assay.registry.bundles). It lives here, not there,
# because check_manifest refuses it in every manifest, so no version file can collide with it.
BUNDLE_JSON = "assay-bundle.json"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SAFE_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

# --------------------------------------------------------------------------- files and hashes
# The public helpers below are shared with assay.bundles, which imports them rather than
# keeping copies of its own.


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, obj: Any) -> str:
    """Write ``obj`` as sorted, indented JSON (NaN/inf refused); return the file's sha256."""
    return write_atomic(Path(path), json_bytes(obj))


# orjson writes indented JSON 15x faster than the stdlib (whose indenting encoder is Python:
# a second for a million-row evaluation's tables). Types JSON has no form for still reach
# ``_json_default`` and are refused there.
_ORJSON_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_SORT_KEYS
    | orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


_ORJSON_COMPACT = _ORJSON_OPTIONS & ~(orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def json_bytes(obj: Any, *, compact: bool = False) -> bytes:
    """``obj`` as write_json writes it: sorted, indented UTF-8 JSON and a final newline; NaN/inf
    refused. ``compact``: no indentation, no spaces, no final newline (files of many numbers)."""
    check_finite(obj)  # orjson would write them as null: a metric turned null would pass unnoticed
    try:
        return orjson.dumps(
            obj, default=_json_default, option=_ORJSON_COMPACT if compact else _ORJSON_OPTIONS
        )
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits, which the stdlib writes
        layout: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
        text = json.dumps(
            obj, sort_keys=True, allow_nan=False, ensure_ascii=False, default=_json_default, **layout
        )
        return (text if compact else text + "\n").encode("utf-8")


def check_finite(value: Any) -> None:
    """Refuse (``ValueError``) a NaN or an infinity anywhere in ``value``."""
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise ValueError(f"out of range float values are not JSON compliant: {value!r}")
    elif isinstance(value, dict):
        for item in value.values():
            check_finite(item)
    elif isinstance(value, list | tuple):
        try:  # numbers only: one sum in C says they are all finite (unless it overflows)
            if math.isfinite(sum(value)):
                return
        except (TypeError, OverflowError):
            pass
        for item in value:
            check_finite(item)
    elif isinstance(value, np.ndarray | np.generic):
        check_finite(value.tolist())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_atomic(path: Path, data: bytes) -> str:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces ``path`` only if the block succeeds, so
    readers never see a half-written file (and a failed write leaves no temp file behind)."""
    with writing(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Name ``path`` in an OSError the block raises without a file name.

    A failed ``write()`` says only "No space left on device"; the CLI's one-line message needs
    to say what was being written.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return its sha256."""
    return write_atomic(Path(path), data)


def check_regular(path: Path, name: str) -> None:
    """Refuse a missing manifest file, and a symlink or special file in its place."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise ArtifactError(f"artifact file {name!r} is missing") from None
    if not stat.S_ISREG(mode):
        raise ArtifactError(f"artifact file {name!r} is not a regular file (symlink or special file)")


def check_hash(name: str, actual: str, expected: str) -> None:
    """Refuse file ``name`` unless its sha256 ``actual`` equals the manifest's ``expected``."""
    if not hmac.compare_digest(actual, expected):
        raise ArtifactError(
            f"artifact file {name!r} is truncated or modified (hash mismatch: "
            f"expected {expected[:12]}…, got {actual[:12]}…)"
        )


def check_manifest(manifest: Any) -> None:
    """Refuse anything but a non-empty {safe file name: lowercase sha256 hex} mapping that does
    not name the bundle header."""
    if not isinstance(manifest, dict) or not manifest:
        raise ArtifactError("manifest must be a non-empty mapping of file name to sha256")
    for name, digest in manifest.items():
        if not isinstance(name, str) or not is_safe_name(name) or name == BUNDLE_JSON:
            raise ArtifactError(f"manifest names an unsafe file: {name!r}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ArtifactError(f"manifest entry {name!r} is not a lowercase sha256 hex digest")


def is_safe_name(name: str) -> bool:
    """A relative POSIX path of plain parts: no absolute paths, '..', '.', hidden parts,
    backslashes or drive letters can get through the part pattern."""
    return len(name) <= 512 and all(_SAFE_NAME_PART.fullmatch(part) for part in name.split("/"))


# --------------------------------------------------------------------------- work folders

# A work folder without a lock file is one an older assay made, or one whose lock is not
# taken yet: it is removed only once nothing has touched it for this long.
STALE_UNLOCKED_S = 3600.0
_LOCK_SUFFIX = ".lock"


class WorkDir:
    """A folder a process fills before publishing it (a version being written, a bundle being
    imported), with a sibling ``<folder>.lock`` file on which it holds an exclusive flock for as
    long as the folder is in use.

    The kernel drops the lock when its process dies, however it dies, so ``remove_stale_workdirs``
    can tell a folder that kill -9 left behind (lock free) from one another process is still
    writing (lock held), on this machine or another one sharing the folder.
    """

    def __init__(self, parent: Path, prefix: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=_LOCK_SUFFIX, dir=parent)
            lock = Path(name)
            folder = lock.with_name(lock.name[: -len(_LOCK_SUFFIX)])
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A clean-up may have taken the fresh file for an orphan and unlinked it before we
            # locked it; then our lock guards nothing, so start again.
            if _same_file(fd, lock):
                try:
                    folder.mkdir()
                    break
                except FileExistsError:  # an unlocked leftover of that name: take another
                    lock.unlink(missing_ok=True)
            os.close(fd)
        self.path = folder
        self._lock = lock
        self._fd: int | None = fd

    def release(self) -> None:
        """Stop holding the folder (once it is published or removed); its lock file goes too."""
        if self._fd is not None:
            self._lock.unlink(missing_ok=True)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def discard(self) -> None:
        """Remove the folder and release it."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def remove_stale_workdirs(
    parent: Path, prefix: str = "", *, unlocked_after_s: float = STALE_UNLOCKED_S
) -> list[Path]:
    """Remove the work folders under ``parent`` whose names start with ``prefix`` and that no
    process holds any more: their lock is free (its process died), or they have no lock file
    and nothing has touched them for ``unlocked_after_s``. Returns what was removed."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for entry in sorted(parent.iterdir()):
        name = entry.name
        if not name.startswith(prefix):
            continue
        try:
            if name.endswith(_LOCK_SUFFIX):
                # A lock whose folder is gone (published, or never made): drop it unless held.
                if not entry.with_name(name[: -len(_LOCK_SUFFIX)]).exists():
                    with _held_if_free(entry) as state:
                        if state == "free":
                            entry.unlink(missing_ok=True)
                continue
            lock = entry.with_name(name + _LOCK_SUFFIX)
            with _held_if_free(lock) as state:
                if state == "held" or (
                    state == "missing" and now - entry.lstat().st_mtime < unlocked_after_s
                ):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
                removed.append(entry)
        except FileNotFoundError:  # published or removed by its owner meanwhile
            continue
    return removed


@contextmanager
def _held_if_free(lock: Path) -> Iterator[str]:
    """Take ``lock`` if nobody holds it, for the block: yields "free" (now ours), "held" or "missing"."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield "missing"
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield "held"
            return
        yield "free"
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except FileNotFoundError:
        return False


def parse_header(data: bytes, name: str, format_name: str, format_version: int) -> dict[str, Any]:
    """A versioned JSON header (``{"format": ..., "format_version": ..., ...}``) as a dict.

    Refuses anything but a JSON object of this format and version; NaN and Infinity, which
    Python's parser would otherwise accept, are refused too.
    """
    try:
        header = json.loads(data, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ArtifactError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != format_name:
        raise ArtifactError(f"{name} is not an {format_name} header")
    if header.get("format_version") != format_version:
        raise ArtifactError(
            f"{name} has format_version {header.get('format_version')!r}; this assay reads {format_version}"
        )
    return header


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")
