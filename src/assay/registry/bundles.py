"""Bundles: the one-file form of a registry version, and the checks that make importing a
hostile file safe.

``export_bundle`` writes a version's manifest files plus its record as one deflated zip with
an ``assay-bundle.json`` header; ``import_bundle`` reads one back into a fresh directory.
A bundle is untrusted input: entry names, types, sizes and compression ratios are checked
before a byte is inflated, bytes are counted again while reading, every file must match the
header's manifest, and nothing reaches the destination unless all of them do.

The hashing, manifest and name checks and atomic writes are shared with ``assay.registry.artifacts``.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from assay.errors import ArtifactError, Conflict
from assay.registry.files import (
    BUNDLE_JSON,
    atomic_output,
    check_hash,
    check_manifest,
    check_regular,
    is_safe_name,
    json_bytes,
    parse_header,
    sha256_file,
    writing,
)

BUNDLE_FORMAT = "assay-bundle"
BUNDLE_FORMAT_VERSION = 1
# Limits for import_bundle: a bundle is untrusted input, so sizes declared in the zip are
# checked before anything is decompressed, and bytes are counted again while reading.
BUNDLE_MAX_TOTAL_BYTES = 2 * 1024**3
BUNDLE_MAX_ENTRIES = 1000
BUNDLE_MAX_JSON_BYTES = 16 * 1024**2
# Deflate tops out near 1032:1; real artifacts (text models, JSON, HTML, skops zips) stay
# far below 200:1. Tiny files are exempt because their ratio means nothing.
BUNDLE_MAX_RATIO = 200
BUNDLE_RATIO_FLOOR_BYTES = 1024**2


def export_bundle(version_dir: Path, manifest: dict[str, str], record: dict, out: Path) -> None:
    """Write a registry version (its manifest files plus ``record``) as one deflated zip at ``out``.

    Each file's sha256 is checked while it is copied, so a corrupted version is never
    exported. Entries carry a fixed timestamp: the same version exports to the same bytes.
    """
    version_dir, out = Path(version_dir), Path(out)
    check_manifest(manifest)
    header = json_bytes(
        {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "record": record,
            "manifest": manifest,
        }
    )
    with atomic_output(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_zip_entry(BUNDLE_JSON), header)
        for name in sorted(manifest):
            path = version_dir / name
            check_regular(path, name)
            digest = hashlib.sha256()
            with path.open("rb") as src, zf.open(_zip_entry(name), "w", force_zip64=True) as dst:
                for chunk in iter(lambda: src.read(1024 * 1024), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            check_hash(name, digest.hexdigest(), manifest[name])


def import_bundle(
    path: Path, dest_dir: Path, *, expected_sha256: str | None = None
) -> tuple[dict, dict[str, str]]:
    """Check a bundle and write its files into ``dest_dir`` (which must not exist or be empty).

    Returns (record, manifest). Nothing lands in ``dest_dir`` unless every file matches the
    bundle's manifest: files go to a temp dir beside it and are moved in at the end. The record
    is returned as the header holds it: only its being an object is checked here, and its
    meaning is the caller's to check against the files (``Registry.import_`` does).

    The manifest travels inside the bundle, so the hash checks catch corruption, not a
    forger who rewrites both; pass ``expected_sha256`` (the bundle's own hash, obtained
    out of band) for that. Either way, loading the model is safe: load_model runs no code.
    """
    path, dest_dir = Path(path), Path(dest_dir)
    if expected_sha256 is not None and not hmac.compare_digest(sha256_file(path), expected_sha256.lower()):
        raise ArtifactError(f"bundle {path.name} does not match the expected sha256")
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise Conflict(f"cannot import into {dest_dir}: it already exists and is not an empty directory")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise ArtifactError(f"{path.name} is not a bundle (not a readable zip file): {exc}") from exc
    with zf:
        entries = _checked_entries(zf)
        if BUNDLE_JSON not in entries:
            raise ArtifactError(f"bundle has no {BUNDLE_JSON}")
        if entries[BUNDLE_JSON].file_size > BUNDLE_MAX_JSON_BYTES:
            raise ArtifactError(f"{BUNDLE_JSON} is larger than {BUNDLE_MAX_JSON_BYTES} bytes")
        record, manifest = _parse_bundle_json(_read_entry(zf, entries[BUNDLE_JSON]))
        unlisted = sorted(set(entries) - set(manifest) - {BUNDLE_JSON})
        if unlisted:
            raise ArtifactError(f"bundle holds files not in its manifest: {', '.join(unlisted)}")
        missing = sorted(set(manifest) - set(entries))
        if missing:
            raise ArtifactError(f"bundle is missing files listed in its manifest: {', '.join(missing)}")

        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.import-", dir=dest_dir.parent))
        try:
            for name in sorted(manifest):
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with writing(target), target.open("xb") as dst:
                    for chunk in _iter_entry(zf, entries[name]):
                        digest.update(chunk)
                        dst.write(chunk)
                check_hash(name, digest.hexdigest(), manifest[name])
            if dest_dir.exists():
                dest_dir.rmdir()  # empty, checked above; rename needs it gone
            staging.rename(dest_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return record, manifest


def _checked_entries(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The zip's entries by name, after refusing anything unsafe before reading a byte."""
    infos = zf.infolist()
    if len(infos) > BUNDLE_MAX_ENTRIES:
        raise ArtifactError(f"bundle has {len(infos)} entries, more than {BUNDLE_MAX_ENTRIES}")
    entries: dict[str, zipfile.ZipInfo] = {}
    folded: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if not is_safe_name(name):
            raise ArtifactError(
                f"bundle entry {name!r} has an unsafe name (absolute, '..', or odd characters)"
            )
        if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
            raise ArtifactError(f"bundle entry {name!r} is not a regular file")
        if info.flag_bits & 0x1:
            raise ArtifactError(f"bundle entry {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArtifactError(f"bundle entry {name!r} uses an unsupported compression method")
        # Case-folded so that two entries cannot land on one file on a case-insensitive disk.
        if name.casefold() in folded:
            raise ArtifactError(f"bundle has duplicate entry {name!r}")
        folded.add(name.casefold())
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > BUNDLE_RATIO_FLOOR_BYTES and ratio > BUNDLE_MAX_RATIO:
            raise ArtifactError(f"bundle entry {name!r} expands more than {BUNDLE_MAX_RATIO}:1 (zip bomb?)")
        total += info.file_size
        if total > BUNDLE_MAX_TOTAL_BYTES:
            raise ArtifactError(f"bundle expands to more than {BUNDLE_MAX_TOTAL_BYTES} bytes")
        entries[name] = info
    return entries


def _iter_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """An entry's bytes in chunks, never more than its declared size (checked, not trusted)."""
    seen = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(1024 * 1024):
                seen += len(chunk)
                if seen > info.file_size:
                    raise ArtifactError(f"bundle entry {info.filename!r} is larger than declared")
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # bad CRC, truncated, zlib error
        raise ArtifactError(f"bundle entry {info.filename!r} is corrupt: {exc}") from exc


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    return b"".join(_iter_entry(zf, info))


def _parse_bundle_json(data: bytes) -> tuple[dict, dict[str, str]]:
    header = parse_header(data, BUNDLE_JSON, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION)
    record, manifest = header.get("record"), header.get("manifest")
    if not isinstance(record, dict):
        raise ArtifactError(f"{BUNDLE_JSON} has no record object")
    check_manifest(manifest)
    assert isinstance(manifest, dict)  # check_manifest refused anything else
    return record, manifest


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info
