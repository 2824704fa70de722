"""Artifacts in an S3-compatible bucket (a real server: moto_server, started by .ci/run), shared by
hosts that each keep a hash-checked local cache."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assay.errors import ArtifactError, SettingsError
from assay.registry.importer import import_version
from assay.settings import Settings
from assay.store.artifact_store import S3ArtifactStore, open_artifact_store
from assay.workspace import Workspace


@dataclass
class Bucket:
    endpoint: str
    name: str
    client: Any  # a boto3 S3 client


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh bucket on the S3-compatible server ASSAY_TEST_S3_ENDPOINT names; skips without one."""
    endpoint = os.environ.get("ASSAY_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip("ASSAY_TEST_S3_ENDPOINT is not set")
    boto3 = pytest.importorskip("boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"assay-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield Bucket(endpoint, name, client)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=entry["Key"])
    client.delete_bucket(Bucket=name)


def _host(tmp_path: Path, name: str, endpoint: str, url: str) -> Workspace:
    """One host: its own home and artifact cache, the shared store and bucket."""
    return Workspace.open(
        Settings.load(
            home=tmp_path / name,
            environ={},
            database_url=f"sqlite:///{tmp_path / 'shared.db'}",
            artifacts_url=url,
            s3_endpoint_url=endpoint,
        )
    )


def test_a_version_published_on_one_host_loads_on_another(
    bucket: Bucket, trained_workspace: Workspace, tmp_path: Path
) -> None:
    endpoint, name, client = bucket.endpoint, bucket.name, bucket.client
    url = f"s3://{name}/models"
    trained_workspace.registry.export("damaging@1", tmp_path / "d.assay")
    first = _host(tmp_path, "a", endpoint, url)
    second = _host(tmp_path, "b", endpoint, url)
    try:
        record = import_version(first.registry, tmp_path / "d.assay").record
        listed = client.list_objects_v2(Bucket=name, Prefix="models/damaging/1/")["Contents"]
        assert {e["Key"] for e in listed} == {f"models/damaging/1/{f}" for f in record.manifest}
        head = client.head_object(Bucket=name, Key="models/damaging/1/card.json")
        assert head["Metadata"]["sha256"] == record.manifest["card.json"]
        there = second.registry.get("damaging", record.version)
        assert not there.directory.exists()  # nothing on the second host until it reads the version
        loaded = second.registry.load(there)
        assert loaded.classes == first.registry.load(record).classes
        assert sorted(p.name for p in there.directory.iterdir()) == sorted(record.manifest)
    finally:
        first.close()
        second.close()


def test_a_modified_object_is_refused_and_not_cached(
    bucket: Bucket, trained_workspace: Workspace, tmp_path: Path
) -> None:
    endpoint, name, client = bucket.endpoint, bucket.name, bucket.client
    url = f"s3://{name}"
    trained_workspace.registry.export("damaging@1", tmp_path / "d.assay")
    first = _host(tmp_path, "a", endpoint, url)
    second = _host(tmp_path, "b", endpoint, url)
    try:
        record = import_version(first.registry, tmp_path / "d.assay").record
        client.put_object(Bucket=name, Key="damaging/1/schema.json", Body=b'{"features": []}')
        there = second.registry.get("damaging", record.version)
        with pytest.raises(ArtifactError, match=r"damaging@1: s3://.*schema.json is truncated or modified"):
            second.registry.load(there)
        assert not (there.directory / "schema.json").exists()
        assert not [p for p in there.directory.iterdir() if p.name.endswith(".part")]
        schema = (record.directory / "schema.json").read_bytes()  # the first host's copy, put back
        client.put_object(Bucket=name, Key="damaging/1/schema.json", Body=schema)
        model_file = next(f for f in record.manifest if f.startswith("model."))
        client.delete_object(Bucket=name, Key=f"damaging/1/{model_file}")
        third = _host(tmp_path, "c", endpoint, url)
        with pytest.raises(ArtifactError, match=f"damaging@1: s3://.*{model_file} cannot be read"):
            third.registry.evaluation(third.registry.get("damaging", record.version))
        third.close()
    finally:
        first.close()
        second.close()


def test_the_url_must_name_a_bucket() -> None:
    assert type(open_artifact_store("")).__name__ == "LocalArtifactStore"
    for bad in ("s3://", "http://bucket/x", "bucket/x"):
        with pytest.raises(SettingsError, match="s3://bucket/prefix"):
            S3ArtifactStore(bad, client=object())
