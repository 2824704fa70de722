"""Tests for assay.bundles: export/import round trips, byte-identical exports, and refusal of
hostile bundles (forged files, unsafe names, symlinks, zip bombs, bad headers) without
writing anything."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assay.errors import ArtifactError, Conflict
from assay.registry import bundles
from assay.registry.artifacts import load_model, save_model, sha256_file, write_json
from assay.registry.bundles import export_bundle, import_bundle
from tests.registry.test_artifacts import fit, make_data, make_reference


def make_zip(path: Path, entries: dict[str, bytes], *, symlinks: frozenset[str] = frozenset()) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)


def bundle_header(manifest: dict[str, str], **overrides) -> bytes:
    header = {"format": "assay-bundle", "format_version": 1, "record": {"version": 1}, "manifest": manifest}
    return json.dumps({**header, **overrides}).encode()


@pytest.fixture(scope="module")
def model() -> tuple[object, np.ndarray]:
    """The estimator a bundled version holds (a 3-class logistic regression) and its data."""
    X, y = make_data(3)
    return fit("lr", X, y), X


@pytest.fixture
def version(model, tmp_path) -> tuple[Path, dict[str, str]]:
    """A registry version directory: model files plus the other files the registry writes."""
    directory = tmp_path / "registry" / "v1"
    estimator, X = model
    manifest = save_model(estimator, directory, reference=make_reference(X))
    manifest["evaluation.json"] = write_json(directory / "evaluation.json", {"auc": 0.91})
    (directory / "card.html").write_text("<h1>Model card</h1>\n")
    manifest["card.html"] = sha256_file(directory / "card.html")
    return directory, manifest


def test_bundle_round_trip(model, version, tmp_path):
    directory, manifest = version
    record = {"name": "essay-quality", "version": 1, "metrics": {"auc": 0.91}}
    export_bundle(directory, manifest, record, tmp_path / "v1.assay")

    got_record, got_manifest = import_bundle(tmp_path / "v1.assay", tmp_path / "imported")

    assert got_record == record and got_manifest == manifest
    for name in manifest:
        assert (tmp_path / "imported" / name).read_bytes() == (directory / name).read_bytes()
    estimator, X = model
    predictor = load_model(tmp_path / "imported", got_manifest)
    np.testing.assert_allclose(predictor.predict_proba(X), estimator.predict_proba(X), atol=1e-9)
    # Same version, same bytes: bundles can be compared and hashed.
    export_bundle(directory, manifest, record, tmp_path / "again.assay")
    assert sha256_file(tmp_path / "again.assay") == sha256_file(tmp_path / "v1.assay")
    with zipfile.ZipFile(tmp_path / "v1.assay") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}


def test_export_refuses_a_corrupted_version(version, tmp_path):
    directory, manifest = version
    (directory / "card.html").write_text("<h1>changed</h1>\n")
    with pytest.raises(ArtifactError, match=r"card\.html.*hash mismatch"):
        export_bundle(directory, manifest, {}, tmp_path / "v1.assay")
    assert not (tmp_path / "v1.assay").exists()


def test_import_checks_the_bundle_hash_when_given(version, tmp_path):
    directory, manifest = version
    export_bundle(directory, manifest, {}, tmp_path / "v1.assay")
    good = sha256_file(tmp_path / "v1.assay")
    with pytest.raises(ArtifactError, match="expected sha256"):
        import_bundle(tmp_path / "v1.assay", tmp_path / "a", expected_sha256="0" * 64)
    assert import_bundle(tmp_path / "v1.assay", tmp_path / "b", expected_sha256=good)[1] == manifest


def test_import_refuses_a_bundle_with_a_modified_file(version, tmp_path):
    directory, manifest = version
    entries = {"assay-bundle.json": bundle_header(manifest)}
    entries |= {name: (directory / name).read_bytes() for name in manifest}
    entries["evaluation.json"] = b'{"auc": 0.99}\n'
    make_zip(tmp_path / "forged.assay", entries)

    with pytest.raises(ArtifactError, match=r"evaluation\.json.*hash mismatch"):
        import_bundle(tmp_path / "forged.assay", tmp_path / "out" / "v1")
    # Nothing was written: no destination, no staging directory left behind.
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "a/../../evil", "..\\evil", "C:/evil", ".hidden"])
def test_import_refuses_unsafe_entry_names(tmp_path, name):
    manifest = {name: hashlib.sha256(b"x").hexdigest()}
    make_zip(tmp_path / "evil.assay", {"assay-bundle.json": bundle_header(manifest), name: b"x"})
    with pytest.raises(ArtifactError, match="unsafe name"):
        import_bundle(tmp_path / "evil.assay", tmp_path / "out" / "v1")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_import_refuses_symlink_entries(tmp_path):
    manifest = {"link": hashlib.sha256(b"/etc/passwd").hexdigest()}
    make_zip(
        tmp_path / "evil.assay",
        {"assay-bundle.json": bundle_header(manifest), "link": b"/etc/passwd"},
        symlinks=frozenset({"link"}),
    )
    with pytest.raises(ArtifactError, match="not a regular file"):
        import_bundle(tmp_path / "evil.assay", tmp_path / "out")


def test_import_refuses_files_not_in_the_manifest(tmp_path):
    manifest = {"a.json": hashlib.sha256(b"{}").hexdigest()}
    entries = {"assay-bundle.json": bundle_header(manifest), "a.json": b"{}", "extra.sh": b"rm -rf /"}
    make_zip(tmp_path / "b.assay", entries)
    with pytest.raises(ArtifactError, match=r"not in its manifest: extra\.sh"):
        import_bundle(tmp_path / "b.assay", tmp_path / "out")


def test_import_refuses_a_bundle_missing_a_manifest_file(tmp_path):
    manifest = {"a.json": hashlib.sha256(b"{}").hexdigest(), "b.json": hashlib.sha256(b"{}").hexdigest()}
    make_zip(tmp_path / "b.assay", {"assay-bundle.json": bundle_header(manifest), "a.json": b"{}"})
    with pytest.raises(ArtifactError, match=r"missing files.*b\.json"):
        import_bundle(tmp_path / "b.assay", tmp_path / "out")


def test_import_refuses_a_zip_bomb_before_inflating_it(tmp_path):
    big = bytes(3 * 1024 * 1024)  # zeros deflate about 1000:1
    manifest = {"big.bin": hashlib.sha256(big).hexdigest()}
    make_zip(tmp_path / "bomb.assay", {"assay-bundle.json": bundle_header(manifest), "big.bin": big})
    with pytest.raises(ArtifactError, match="zip bomb"):
        import_bundle(tmp_path / "bomb.assay", tmp_path / "out")


def test_import_caps_the_total_size(tmp_path, monkeypatch):
    data = os.urandom(4096)
    manifest = {"a.bin": hashlib.sha256(data).hexdigest()}
    make_zip(tmp_path / "b.assay", {"assay-bundle.json": bundle_header(manifest), "a.bin": data})
    monkeypatch.setattr(bundles, "BUNDLE_MAX_TOTAL_BYTES", 4096)
    with pytest.raises(ArtifactError, match="expands to more than 4096 bytes"):
        import_bundle(tmp_path / "b.assay", tmp_path / "out")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a.json": b"{}"}, "no assay-bundle.json"),
        ({"assay-bundle.json": b"{not json"}, "not valid JSON"),
        ({"assay-bundle.json": b'{"format": "other"}'}, "not an assay-bundle header"),
        ({"assay-bundle.json": bundle_header({"a": "0" * 64}, record={"auc": float("nan")})}, "NaN"),
        ({"assay-bundle.json": bundle_header({"a": "0" * 64}, format_version=2)}, "format_version 2"),
        ({"assay-bundle.json": bundle_header({"a": "0" * 64}, record=[1])}, "no record object"),
        ({"assay-bundle.json": bundle_header({"assay-bundle.json": "0" * 64})}, "unsafe file"),
    ],
)
def test_import_refuses_a_bad_header(tmp_path, entries, message):
    make_zip(tmp_path / "b.assay", entries)
    with pytest.raises(ArtifactError, match=message):
        import_bundle(tmp_path / "b.assay", tmp_path / "out")


def test_import_refuses_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "b.assay").write_bytes(pickle.dumps({"not": "a zip"}))
    with pytest.raises(ArtifactError, match="not a readable zip"):
        import_bundle(tmp_path / "b.assay", tmp_path / "out")


def test_import_refuses_a_corrupt_entry(version, tmp_path):
    directory, manifest = version
    export_bundle(directory, manifest, {}, tmp_path / "v1.assay")
    data = bytearray((tmp_path / "v1.assay").read_bytes())
    with zipfile.ZipFile(tmp_path / "v1.assay") as zf:
        info = zf.getinfo("model.skops")
    # Flip a byte inside the compressed data: CRC or inflate fails, or the hash does.
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    (tmp_path / "bad.assay").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.skops"):
        import_bundle(tmp_path / "bad.assay", tmp_path / "out" / "v1")
    assert list((tmp_path / "out").iterdir()) == []


def test_import_refuses_to_overwrite_an_existing_version(version, tmp_path):
    directory, manifest = version
    export_bundle(directory, manifest, {}, tmp_path / "v1.assay")
    with pytest.raises(Conflict):
        import_bundle(tmp_path / "v1.assay", directory)
    (tmp_path / "empty").mkdir()
    assert import_bundle(tmp_path / "v1.assay", tmp_path / "empty")[1] == manifest
