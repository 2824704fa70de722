"""The artifact store: where versions' files live for every host.

By default the local artifact folder is the store (one host, or a folder every
host mounts). With ``artifacts_url = "s3://bucket/prefix"`` the files of each
version are kept in an S3-compatible bucket (AWS, MinIO, Ceph, ... through
``boto3``, the ``[s3]`` extra) under ``<prefix>/<model>/<version>/<file>``, and
the local folder is this host's cache of them.

The registry publishes a version's files with ``publish`` inside the transaction
that records their hashes, before it commits, so a committed version's files are
always in the store; it fetches them with ``fetch`` before it reads them. A
fetched file is hash-checked against the version's manifest before it is put in
place (written aside, then renamed), so the cache holds only whole, verified
files; a version is immutable, so a cached file never needs fetching again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from assay.errors import ArtifactError, SettingsError

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """Where a version's files are kept beyond this host's folder."""

    def publish(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        """Store the files of ``directory`` (named by ``manifest``) as ``model@version``'s."""
        ...

    def fetch(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        """Make sure ``directory`` holds the version's files, each checked against ``manifest``."""
        ...


class LocalArtifactStore:
    """The local folder is the store: nothing to publish, nothing to fetch."""

    def publish(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        return None

    def fetch(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        return None


class S3ArtifactStore:
    """Versions' files in an S3-compatible bucket; the local folder caches what this host read."""

    def __init__(self, url: str, *, endpoint_url: str = "", client: Any = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise SettingsError(f"artifacts_url must look like s3://bucket/prefix; got {url!r}")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            try:
                import boto3  # the [s3] extra; only needed when artifacts_url names a bucket
            except ImportError as exc:
                raise SettingsError('artifacts_url names a bucket: pip install "assay[s3]"') from exc
            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self._s3 = client

    def _key(self, model: str, version: int, name: str) -> str:
        return "/".join(p for p in (self.prefix, model, str(version), name) if p)

    def publish(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        for name, digest in manifest.items():
            with (directory / name).open("rb") as body:
                # The hash travels with the object, so anyone can check a copy without the store.
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self._key(model, version, name),
                    Body=body,
                    Metadata={"sha256": digest},
                )

    def fetch(self, directory: Path, model: str, version: int, manifest: Mapping[str, str]) -> None:
        missing = [name for name in manifest if not (directory / name).is_file()]
        if not missing:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for name in missing:
            self._fetch_one(directory, self._key(model, version, name), name, manifest[name])

    def _fetch_one(self, directory: Path, key: str, name: str, expected: str) -> None:
        where = f"s3://{self.bucket}/{key}"
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # botocore's errors: a missing key, a refused or unreachable store
            raise ArtifactError(f"{where} cannot be read: {exc}") from exc
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: body.read(1024 * 1024), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected:
                raise ArtifactError(f"{where} is truncated or modified (hash mismatch)")
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("fetched %s", where)


def open_artifact_store(url: str, endpoint_url: str = "") -> ArtifactStore:
    """The store ``url`` names: empty for the local folder, ``s3://bucket/prefix`` for a bucket."""
    if not url:
        return LocalArtifactStore()
    return S3ArtifactStore(url, endpoint_url=endpoint_url)
