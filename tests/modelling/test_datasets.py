"""Reading data sets: formats, compression, headers, and the checks that refuse bad data."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from assay.errors import DataError
from assay.modelling import datasets
from assay.modelling.datasets import check_labels, feature_kinds, fingerprint, read_labelled, read_table
from assay.modelling.spec_file import parse_spec

FRAME = pd.DataFrame(
    {"id": ["007", "2", "3"], "x": [1.5, 2.0, None], "flag": [True, False, True], "y": ["a", "b", "a"]}
)


def _write_compressed(path: Path, data: bytes) -> None:
    """``data`` in ``path``, compressed as its last suffix says (written independently of the reader)."""
    if path.suffix == ".zst":
        with pa.output_stream(str(path), compression="zstd") as out:
            out.write(data)
        return
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "wb") as fh:
        fh.write(data)


def _file_bytes(name: str) -> bytes:
    if ".parquet" in name:
        buffer = io.BytesIO()
        FRAME.to_parquet(buffer)
        return buffer.getvalue()
    return FRAME.to_csv(sep="\t" if ".tsv" in name else ",", index=False).encode()


@pytest.mark.parametrize(
    "name",
    [
        "d.csv",
        "d.csv.gz",
        "d.csv.bz2",
        "d.csv.xz",
        "d.csv.zst",
        "d.tsv",
        "d.tsv.gz",
        "d.tsv.bz2",
        "d.parquet",
        "d.parquet.gz",
        "d.parquet.bz2",
        "d.parquet.xz",
        "d.parquet.zst",
    ],
)
def test_formats_and_compression_read_the_same(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _write_compressed(path, _file_bytes(name))
    frame = read_table(path)
    assert list(frame.columns) == ["id", "x", "flag", "y"]
    assert frame["id"].astype(str).tolist() == ["007", "2", "3"]  # ids keep their leading zeros
    assert pd.isna(frame["x"].iloc[2])


@pytest.mark.parametrize("name", ["d.parquet.gz", "d.parquet.xz", "d.csv.zst"])
def test_corrupt_compressed_files_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(_file_bytes(name))  # the right content, but not compressed as the name says
    with pytest.raises(DataError, match=rf"{name}: cannot be read as (parquet|csv)"):
        read_table(path)


def test_headerless_file_takes_names_from_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    FRAME.to_csv(path, sep="\t", index=False, header=False)
    frame = read_table(path, header=False, columns=["id", "x", "flag", "y"])
    assert frame.shape == (3, 4) and frame["y"].tolist() == ["a", "b", "a"]
    with pytest.raises(DataError, match="has 4 columns but the spec names 3"):
        read_table(path, header=False, columns=["id", "x", "y"])


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("id,x,y\n", "no rows")],
)
def test_empty_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_unknown_type_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "x.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="unknown file type"):
        read_table(tmp_path / "x.json")


def _spec(tmp_path: Path, **data: object) -> object:
    return parse_spec(
        {"name": "m", "data": {"train": "d.csv", "id": "id", "label": "y", **data}}, base=tmp_path
    )


def test_duplicate_ids_and_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"id": [1, 1, 2], "y": ["a", "b", "a"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"duplicate item ids.*'1'"):
        read_labelled(_spec(tmp_path), [str(path)])
    with pytest.raises(DataError, match="label column 'label'") as info:
        read_labelled(_spec(tmp_path, label="label"), [str(path)])
    assert info.value.field == "data.label"


def test_missing_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"id": [1, 2], "y": ["a", None]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="1 empty values"):
        read_labelled(_spec(tmp_path), [str(path)])


def test_labels_single_class_and_positive() -> None:
    with pytest.raises(DataError, match="single class"):
        check_labels(np.array(["a", "a"]), None, source="s")
    assert check_labels(np.array(["True", "False"]), None, source="s") == (["False", "True"], "True")
    assert check_labels(np.array(["x", "y", "z"]), None, source="s") == (["x", "y", "z"], None)
    with pytest.raises(DataError, match="not a label value"):
        check_labels(np.array(["a", "b"]), "c", source="s")


def test_feature_kinds_default_to_every_other_column(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "name": "m",
            "data": {"train": "d.csv", "id": "id", "label": "y"},
            "features": {"sensitive": ["flag"]},
        }
    )
    frame = FRAME.astype(str).replace("nan", None)
    assert feature_kinds(spec, frame, source="s") == {"x": "numeric"}
    spec.features.sensitive = []
    assert feature_kinds(spec, frame, source="s") == {"x": "numeric", "flag": "boolean"}
    spec.features.include = ["nope"]
    with pytest.raises(DataError, match="'nope'"):
        feature_kinds(spec, frame, source="s")


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("id,y\n1,a\n")
    first = fingerprint([str(a)])
    assert first == fingerprint([str(a)])
    a.write_text("id,y\n1,b\n")
    assert fingerprint([str(a)]) != first


TEXTS = {
    "duplicate names": "a,a,b\n1,2,3\n",
    "missing values": "a,b\n,NA\nnull,x\nN/A,#N/A\n-nan,1\n",
    "quotes": 'a,b\n"x,y","he said ""hi"""\n"",1\n"NA",2\n',
    "line break in a value": 'a,b\n"x\ny",1\n',
    "blank line": "a,b\n1,2\n\n3,4\n",
    "spaces": "a,b\n 1 , x \n",
    "byte order mark": "\ufeffa,b\n1,2\n",
    "crlf": "a,b\r\n1,2\r\n",
    "empty column": "a,b\n,1\n,2\n",
    "leading zeros": "id,b\n007,1\n",
    "short row": "a,b,c\n1,2\n",  # Arrow refuses these two: pandas reads them
    "extra separator": "a,b\n1,2,\n",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_large_files_read_by_arrow_read_as_pandas_reads_them(tmp_path: Path, monkeypatch, name: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(TEXTS[name], encoding="utf-8", newline="")
    small = read_table(path)  # pandas' parser
    monkeypatch.setattr(datasets, "ARROW_MIN_BYTES", 0)
    monkeypatch.setattr(pd, "read_csv", _engines_used(pd.read_csv, used := []))
    large = read_table(path)
    assert used[0] == "pyarrow"
    pd.testing.assert_frame_equal(large, small)


def _engines_used(read_csv, used: list[str]):
    def spy(*args, **kwargs):
        used.append(kwargs.get("engine", "c"))
        return read_csv(*args, **kwargs)

    return spy
