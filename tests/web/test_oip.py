"""The Open Inference Protocol over HTTP (/v2): JSON and the binary tensor extension, its limits,
the protocol's error shape, and bad binary input, through the real app.

The conformance of real Triton clients against ``assay serve`` (HTTP and gRPC) is in
tests/web/test_oip_clients.py; the gRPC endpoint's own behaviour in tests/web/test_grpc.py.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.settings import Settings
from assay.web.app import create_app
from tests.servers import FEATURES, AppClient, edit_items

BOOLEANS = ("user_is_anon", "user_is_bot_or_sysop")
INFER = "/v2/models/damaging/infer"


@pytest.fixture
def app_settings(trained_home: Path) -> Settings:
    return Settings.load(home=trained_home, environ={})


@pytest.fixture
def client(app_settings: Settings) -> Iterator[AppClient]:
    with AppClient(create_app(app_settings)) as test_client:
        yield test_client


def oip_error(response: httpx.Response, status: int, *names: str) -> str:
    """The protocol's error shape, pinned: ``{"error": "message"}``, the message naming ``names``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    for name in names:
        assert name in body["error"], body["error"]
    return str(body["error"])


def columns(items: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [item["features"][name] for item in items] for name in FEATURES}


def json_inputs(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "datatype": "BOOL" if name in BOOLEANS else "FP64",
            "shape": [len(values)],
            "data": values,
        }
        for name, values in columns(items).items()
    ]


def raw_tensors(
    items: Sequence[dict[str, Any]], numeric: str = "FP32"
) -> list[tuple[str, str, list[int], bytes]]:
    """(name, datatype, shape, raw bytes) of each feature, booleans as BOOL, the rest as ``numeric``."""
    out = []
    for name, values in columns(items).items():
        datatype = "BOOL" if name in BOOLEANS else numeric
        dtype = {"BOOL": "?", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}[
            datatype
        ]
        column = np.asarray(values, dtype=np.float64)
        if datatype == "FP16":
            column = np.clip(column, -65504, 65504)  # FP16's range: a larger value would be infinity
        out.append((name, datatype, [len(values)], column.astype(dtype).tobytes()))
    return out


def binary_request(
    tensors: Sequence[tuple[str, str, list[int], bytes]], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A body in the binary tensor extension, and its headers."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
                for name, datatype, shape, raw in tensors
            ],
            **extra,
        }
    )
    body = header + b"".join(raw for *_, raw in tensors)
    return body, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def read_binary(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header of a binary response and each binary output as an array."""
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:size])
    arrays, offset = {}, size
    for out in header["outputs"]:
        if "data" in out:
            continue  # this one came as JSON
        nbytes = out["parameters"]["binary_data_size"]
        raw = response.content[offset : offset + nbytes]
        offset += nbytes
        if out["datatype"] == "BYTES":
            values, k = [], 0
            while k < len(raw):
                length = int.from_bytes(raw[k : k + 4], "little")
                values.append(raw[k + 4 : k + 4 + length].decode())
                k += 4 + length
            arrays[out["name"]] = np.array(values, dtype=object).reshape(out["shape"])
        else:
            dtype = {"FP64": "<f8", "BOOL": "?"}[out["datatype"]]
            arrays[out["name"]] = np.frombuffer(raw, dtype=dtype).reshape(out["shape"])
    assert offset == len(response.content)
    return header, arrays


def v1_scores(
    client: AppClient, items: Sequence[dict[str, Any]], model: str = "damaging"
) -> list[dict[str, Any]]:
    scores = client.post("/v1/scores", json={"models": [model], "items": list(items)}).json()["scores"]
    return [scores[item["id"]][model] for item in items]


# --- metadata, health, versions ---------------------------------------------------------------


def test_server_and_model_metadata_health_and_versions(client: AppClient) -> None:
    assert client.get("/v2").json() == {
        "name": "assay",
        "version": client.get("/v2").json()["version"],
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/damaging").json()
    assert meta["name"] == "damaging" and meta["versions"] == ["1"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        name: "BOOL" if name in BOOLEANS else "FP64" for name in FEATURES
    }
    assert meta["outputs"] == [
        {"name": "probability", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "prediction", "datatype": "BOOL", "shape": [-1]},
    ]
    quality = client.get("/v2/models/quality/versions/1").json()
    assert {i["name"]: i["datatype"] for i in quality["inputs"]}["topic"] == "BYTES"
    assert quality["outputs"][1]["datatype"] == "BYTES"
    assert client.get("/v2/models/damaging/versions/1/ready").json() == {"name": "damaging", "ready": True}
    assert client.get("/v2/models/damaging/versions/production/ready").status_code == 200
    oip_error(client.get("/v2/models/nope/ready"), 404, "nope")
    oip_error(client.get("/v2/models/damaging/versions/7"), 404, "version 7")
    oip_error(client.get("/v2/models/damaging/versions/beta/ready"), 404, "beta")


def test_routing_errors_and_bugs_take_the_protocol_shape_on_v2_only(client: AppClient) -> None:
    oip_error(client.get("/v2/nothing"), 404)
    wrong = client.delete(INFER)
    oip_error(wrong, 405)
    assert wrong.headers["allow"] == "POST"
    # /v1 keeps assay's own shape.
    assert set(client.get("/v1/nothing").json()["error"]) == {"code", "message"}


# --- JSON -----------------------------------------------------------------------------------------


def test_json_inference_matches_v1(client: AppClient) -> None:
    items = edit_items(3)
    response = client.post(
        "/v2/models/damaging/versions/1/infer", json={"id": "r1", "inputs": json_inputs(items)}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == "damaging" and body["model_version"] == "1"
    probability, prediction = body["outputs"]
    assert probability["shape"] == [3, 2] and probability["parameters"]["classes"] == ["true", "false"]
    for k, score in enumerate(v1_scores(client, items)):
        assert probability["data"][2 * k] == pytest.approx(score["probability"]["true"], abs=1e-12)
        assert prediction["data"][k] == score["prediction"]
    # [n, 1] tensors, nested or flat, are the same rows.
    nested = [{**t, "shape": [3, 1], "data": [[v] for v in t["data"]]} for t in json_inputs(items)]
    assert client.post(INFER, json={"inputs": nested}).json()["outputs"] == body["outputs"]


def test_the_model_named_in_the_body_as_kserve_sends_it_must_be_the_paths(client: AppClient) -> None:
    inputs = json_inputs(edit_items(2))
    # KServe's Python client repeats the model in the body (model_name).
    same = client.post(INFER, json={"model_name": "damaging", "inputs": inputs})
    assert same.status_code == 200, same.text
    versioned = client.post(
        "/v2/models/damaging/versions/1/infer",
        json={"model_name": "damaging", "model_version": "1", "inputs": inputs},
    )
    assert versioned.status_code == 200 and versioned.json()["outputs"] == same.json()["outputs"]
    oip_error(
        client.post(INFER, json={"model_name": "other", "inputs": inputs}),
        422,
        "model_name 'other'",
        "'damaging'",
    )
    oip_error(
        client.post("/v2/models/damaging/versions/1/infer", json={"model_version": "2", "inputs": inputs}),
        422,
        "model_version '2'",
    )
    oip_error(
        client.post(INFER, json={"model_name": 3, "inputs": inputs}), 422, "model_name must be a string"
    )


def test_multiclass_and_categories_as_bytes(client: AppClient) -> None:
    rows = [
        {"length": 1200.0, "refs": 3, "topic": "science"},
        {"length": 90000.5, "refs": 200, "topic": "art"},
    ]
    inputs = [
        {"name": "length", "datatype": "FP32", "shape": [2], "data": [r["length"] for r in rows]},
        {"name": "refs", "datatype": "INT64", "shape": [2], "data": [r["refs"] for r in rows]},
        {"name": "topic", "datatype": "BYTES", "shape": [2], "data": [r["topic"] for r in rows]},
    ]
    body = client.post("/v2/models/quality/infer", json={"inputs": inputs}).json()
    probability, prediction = body["outputs"]
    classes = probability["parameters"]["classes"]
    items = [{"id": str(k), "features": r} for k, r in enumerate(rows)]
    for k, score in enumerate(v1_scores(client, items, "quality")):
        assert probability["data"][k * 3 : k * 3 + 3] == pytest.approx(
            [score["probability"][c] for c in classes]
        )
        assert prediction["data"][k] == score["prediction"]
    unknown = [*inputs[:2], {**inputs[2], "data": ["science", "chess"]}]
    oip_error(
        client.post("/v2/models/quality/infer", json={"inputs": unknown}), 422, "input 'topic'", "chess"
    )
    numeric_topic = [*inputs[:2], {**inputs[2], "datatype": "FP32", "data": [1.0, 2.0]}]
    oip_error(
        client.post("/v2/models/quality/infer", json={"inputs": numeric_topic}), 422, "input 'topic'", "BYTES"
    )


def test_empty_requests_have_empty_answers(client: AppClient) -> None:
    for model in ("damaging", "quality"):
        declared = client.get(f"/v2/models/{model}").json()["inputs"]
        empty = [{"name": i["name"], "datatype": i["datatype"], "shape": [0], "data": []} for i in declared]
        answer = client.post(f"/v2/models/{model}/infer", json={"inputs": empty})
        assert answer.status_code == 200, answer.text
        probability, prediction = answer.json()["outputs"]
        assert probability["shape"][0] == 0 and probability["data"] == []
        assert prediction["shape"] == [0] and prediction["data"] == []


@pytest.mark.parametrize(
    ("change", "status", "names"),
    [
        (lambda inputs: inputs[1:], 422, ["input 'longest_repeated_char_added'", "missing"]),
        (lambda inputs: [*inputs, {**inputs[0], "name": "colour"}], 422, ["input 'colour'", "not a feature"]),
        (lambda inputs: [*inputs, inputs[0]], 422, ["input 'longest_repeated_char_added'", "twice"]),
        (
            lambda inputs: [{**inputs[0], "shape": [2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "3 values"],
        ),
        (
            lambda inputs: [{**inputs[0], "shape": [3, 2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "shape"],
        ),
        (
            lambda inputs: [{**inputs[0], "shape": [-3]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "shape"],
        ),
        (
            lambda inputs: [{**inputs[0], "datatype": "FLOAT"}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "FLOAT"],
        ),
        (
            lambda inputs: [{**inputs[0], "datatype": "BF16"}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "BF16"],
        ),
        (
            lambda inputs: [{**inputs[0], "data": ["a", 1, 2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "numbers"],
        ),
        (
            lambda inputs: [{**inputs[0], "data": [True, 1, 2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "bool"],
        ),
        (
            lambda inputs: [{**inputs[0], "datatype": "INT8", "data": [1, 300, 2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "INT8"],
        ),
        (
            lambda inputs: [{**inputs[0], "datatype": "UINT8", "data": [1, -1, 2]}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "UINT8"],
        ),
        (
            lambda inputs: [
                *inputs[:6],
                {**inputs[6], "datatype": "FP64", "data": [0.5, 1.0, 0.0]},
                *inputs[7:],
            ],
            422,
            ["input 'user_is_anon'"],
        ),
        (
            lambda inputs: [
                *inputs[:6],
                {**inputs[6], "datatype": "BYTES", "data": ["a", "b", "c"]},
                *inputs[7:],
            ],
            422,
            ["input 'user_is_anon'", "BOOL"],
        ),
        (
            lambda inputs: [*inputs[:6], {**inputs[6], "datatype": "INT8", "data": [0, 2, 1]}, *inputs[7:]],
            422,
            ["input 'user_is_anon'"],
        ),
        (
            lambda inputs: [{**inputs[0], "data": None}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'"],
        ),
        (
            lambda inputs: [{k: v for k, v in inputs[0].items() if k != "data"}, *inputs[1:]],
            422,
            ["input 'longest_repeated_char_added'", "no data"],
        ),
        (
            lambda inputs: [{**inputs[0], "parameters": {"shared_memory_region": "r"}}, *inputs[1:]],
            422,
            ["shared memory"],
        ),
    ],
)
def test_bad_json_tensors_are_refused_naming_the_input(
    client: AppClient, change: Any, status: int, names: list[str]
) -> None:
    inputs = change(json_inputs(edit_items(3)))
    oip_error(client.post(INFER, json={"inputs": inputs}), status, *names)


def test_bad_json_requests_are_refused(client: AppClient) -> None:
    inputs = json_inputs(edit_items(2))
    oip_error(client.post(INFER, content=b"{not json"), 400, "JSON")
    oip_error(client.post(INFER, content=b""), 400)
    oip_error(client.post(INFER, json=[]), 422)
    oip_error(client.post(INFER, json={"inputs": []}), 422, "inputs")
    oip_error(client.post(INFER, json={"inputs": inputs, "extra": 1}), 422, "extra")
    oip_error(client.post(INFER, json={"inputs": inputs, "id": 5}), 422, "id")
    oip_error(client.post(INFER, json={"inputs": inputs, "outputs": [{"name": "colour"}]}), 422, "colour")
    oip_error(
        client.post(INFER, json={"inputs": inputs, "outputs": [{"name": "prediction"}] * 2}), 422, "twice"
    )
    bad_flag = {"inputs": inputs, "parameters": {"binary_data_output": "yes"}}
    oip_error(client.post(INFER, json=bad_flag), 422, "binary_data_output")
    oip_error(client.post("/v2/models/nope/infer", json={"inputs": inputs}), 404, "nope")
    oip_error(client.post("/v2/models/damaging/versions/9/infer", json={"inputs": inputs}), 404, "version 9")


# --- the binary tensor extension ------------------------------------------------------------------


@pytest.mark.parametrize("numeric", ["FP16", "FP32", "FP64", "INT32", "INT64"])
def test_binary_inputs_score_what_their_bytes_hold(client: AppClient, numeric: str) -> None:
    items = edit_items(5, seed=11)
    tensors = raw_tensors(items, numeric)
    body, headers = binary_request(tensors)
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"  # no binary output was asked for
    probability = response.json()["outputs"][0]["data"]
    # The same values, as the bytes hold them, through /v1.
    decoded = []
    for k, item in enumerate(items):
        features = {}
        for name, datatype, _shape, raw in tensors:
            dtype = {
                "BOOL": "?",
                "FP16": "<f2",
                "FP32": "<f4",
                "FP64": "<f8",
                "INT32": "<i4",
                "INT64": "<i8",
            }[datatype]
            features[name] = np.frombuffer(raw, dtype=dtype)[k].item()
        decoded.append({"id": item["id"], "features": features})
    for k, score in enumerate(v1_scores(client, decoded)):
        assert probability[2 * k] == pytest.approx(score["probability"]["true"], abs=1e-12)


def test_binary_outputs_when_asked(client: AppClient) -> None:
    items = edit_items(4)
    tensors = raw_tensors(items, "FP64")
    body, headers = binary_request(tensors, parameters={"binary_data_output": True}, id="b1")
    header, arrays = read_binary(client.post(INFER, content=body, headers=headers))
    assert header["id"] == "b1" and [o["name"] for o in header["outputs"]] == ["probability", "prediction"]
    assert header["outputs"][0]["parameters"]["classes"] == ["true", "false"]
    scores = v1_scores(client, items)
    assert arrays["probability"][:, 0].tolist() == pytest.approx([s["probability"]["true"] for s in scores])
    assert arrays["prediction"].tolist() == [s["prediction"] for s in scores]

    # One output, binary by its own parameter; the other as JSON.
    outputs = [{"name": "prediction", "parameters": {"binary_data": True}}, {"name": "probability"}]
    body, headers = binary_request(tensors, outputs=outputs)
    header, arrays = read_binary(client.post(INFER, content=body, headers=headers))
    assert [o["name"] for o in header["outputs"]] == ["prediction", "probability"]
    assert header["outputs"][1]["data"][0] == pytest.approx(scores[0]["probability"]["true"])
    assert arrays["prediction"].tolist() == [s["prediction"] for s in scores]

    # JSON inputs may ask for binary outputs too; the classification extension answers top-K strings.
    outputs = [{"name": "probability", "parameters": {"classification": 1, "binary_data": True}}]
    _, arrays = read_binary(client.post(INFER, json={"inputs": json_inputs(items), "outputs": outputs}))
    for k, score in enumerate(scores):
        value, index, label = arrays["probability"][k, 0].split(":")
        assert label == ("true" if score["prediction"] else "false") and index == (
            "0" if label == "true" else "1"
        )
        assert float(value) == pytest.approx(score["probability"][label], abs=1e-6)


def test_multiclass_binary_bytes_in_and_out(client: AppClient) -> None:
    topics = ["science", "art", "sport"]
    encoded = b"".join(len(t).to_bytes(4, "little") + t.encode() for t in topics)
    tensors = [
        ("length", "FP64", [3], np.array([900.0, 20000.0, 4000.0]).tobytes()),
        ("refs", "INT32", [3, 1], np.array([1, 40, 8], dtype="<i4").tobytes()),
        ("topic", "BYTES", [3], encoded),
    ]
    body, headers = binary_request(tensors, parameters={"binary_data_output": True})
    header, arrays = read_binary(client.post("/v2/models/quality/infer", content=body, headers=headers))
    items = [
        {"id": str(k), "features": {"length": length, "refs": refs, "topic": topic}}
        for k, (length, refs, topic) in enumerate(
            zip([900.0, 20000.0, 4000.0], [1, 40, 8], topics, strict=True)
        )
    ]
    assert arrays["prediction"].tolist() == [s["prediction"] for s in v1_scores(client, items, "quality")]
    assert header["outputs"][1]["datatype"] == "BYTES"


def _tensors(items: int = 3) -> list[tuple[str, str, list[int], bytes]]:
    return raw_tensors(edit_items(items), "FP32")


def _with(tensors: list[tuple[str, str, list[int], bytes]], k: int, **change: Any) -> list[Any]:
    name, datatype, shape, raw = tensors[k]
    replaced = (
        change.get("name", name),
        change.get("datatype", datatype),
        change.get("shape", shape),
        change.get("raw", raw),
    )
    return [*tensors[:k], replaced, *tensors[k + 1 :]]


def _bytes_tensor(elements: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


NAN32 = np.array([1.0, np.nan, 2.0], dtype="<f4").tobytes()
INF64 = np.array([1.0, 2.0, -np.inf], dtype="<f8").tobytes()
INF16 = np.array([1.0, np.inf, 2.0], dtype="<f2").tobytes()


@pytest.mark.parametrize(
    ("tensors", "status", "names"),
    [
        # sizes that disagree with shape x datatype
        (
            lambda t: _with(t, 0, raw=t[0][3][:-1]),
            422,
            ["input 'longest_repeated_char_added'", "11 bytes", "12"],
        ),
        (
            lambda t: _with(t, 0, raw=t[0][3] + b"\0\0\0\0"),
            422,
            ["input 'longest_repeated_char_added'", "16 bytes"],
        ),
        (lambda t: _with(t, 1, datatype="FP64"), 422, ["input 'words_added'", "FP64"]),
        (lambda t: _with(t, 1, shape=[4]), 422, ["input 'words_added'"]),
        # unknown datatypes
        (lambda t: _with(t, 2, datatype="FLOAT32"), 422, ["input 'words_removed'", "FLOAT32"]),
        (lambda t: _with(t, 2, datatype="BF16", raw=t[2][3][:6]), 422, ["input 'words_removed'", "BF16"]),
        # NaN and infinity in floats
        (lambda t: _with(t, 3, raw=NAN32), 422, ["input 'badwords_prop_delta_sum'", "element 1", "nan"]),
        (
            lambda t: _with(t, 3, datatype="FP64", raw=INF64),
            422,
            ["input 'badwords_prop_delta_sum'", "element 2", "inf"],
        ),
        (
            lambda t: _with(t, 3, datatype="FP16", raw=INF16),
            422,
            ["input 'badwords_prop_delta_sum'", "element 1"],
        ),
        # BOOL bytes that are not 0 or 1
        (lambda t: _with(t, 6, raw=b"\x00\x02\x01"), 422, ["input 'user_is_anon'", "element 1", "0 or 1"]),
        # rows that disagree between inputs
        (lambda t: _with(t, 0, shape=[2], raw=t[0][3][:8]), 422, ["input 'words_added' has 3 rows", "has 2"]),
        # shapes that are not one value per row, negative or past any limit
        (lambda t: _with(t, 1, shape=[-3]), 422, ["input 'words_added'", "shape must be [n] or [n, 1]"]),
        (lambda t: _with(t, 1, shape=[3, 2]), 422, ["input 'words_added'", "got [3, 2]"]),
        (lambda t: _with(t, 1, shape=[3.0]), 422, ["input 'words_added'", "got [3.0]"]),
        (lambda t: _with(t, 1, shape=[2**62]), 413, ["input 'words_added'", "4611686018427387904 rows"]),
        (lambda t: _with(t, 1, shape=[0]), 422, ["input 'words_added'", "12 bytes of data, but shape [0]"]),
        # datatypes spelled otherwise, or not the feature's kind
        (lambda t: _with(t, 2, datatype="fp32"), 422, ["input 'words_removed'", "'fp32' is not"]),
        (lambda t: _with(t, 2, datatype=None), 422, ["input 'words_removed'", "'None' is not"]),
        (
            lambda t: _with(t, 2, datatype="BYTES", raw=_bytes_tensor([b"1", b"2", b"3"])),
            422,
            ["input 'words_removed' is a numeric feature", "not BYTES"],
        ),
        (
            lambda t: _with(t, 6, datatype="FP32", raw=np.array([0, 1, 1], dtype="<f4").tobytes()),
            422,
            ["input 'user_is_anon' is a boolean feature", "FP32"],
        ),
        # BYTES whose length prefix runs past the tensor
        (
            lambda t: _with(t, 2, datatype="BYTES", raw=b"\xff\xff\xff\xffabc"),
            422,
            ["input 'words_removed'", "says 4294967295 bytes"],
        ),
    ],
)
def test_bad_binary_tensors_are_refused_naming_the_input(
    client: AppClient, tensors: Any, status: int, names: list[str]
) -> None:
    body, headers = binary_request(tensors(_tensors()))
    oip_error(client.post(INFER, content=body, headers=headers), status, *names)


def test_values_beyond_the_models_arithmetic_are_refused_naming_the_input(client: AppClient) -> None:
    """The largest float64 overflows the linear model's scaled terms: a 422 naming the input, not a
    NaN score or a 500 (tests turn numpy's overflow warning into an error, so none may be raised);
    the most negative INT64 is a large but computable value, and scores."""
    assert client.get("/v2/models/damaging").json()["platform"] == "compiled-linear"
    big = np.array([0.1, np.finfo(np.float64).max, 0.2]).tobytes()  # this feature's scale is ~0.1
    body, headers = binary_request(_with(raw_tensors(edit_items(3), "FP64"), 3, raw=big))
    oip_error(
        client.post(INFER, content=body, headers=headers),
        422,
        "input 'badwords_prop_delta_sum'",
        "too far outside the training data",
    )
    low = np.array([0, -(2**63), 2], dtype="<i8").tobytes()
    body, headers = binary_request(_with(raw_tensors(edit_items(3), "FP64"), 0, datatype="INT64", raw=low))
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert all(np.isfinite(response.json()["outputs"][0]["data"]))


def test_bad_binary_framing_is_refused(client: AppClient) -> None:
    body, headers = binary_request(_tensors())
    size = int(headers["Inference-Header-Content-Length"])
    post = lambda content, **h: client.post(INFER, content=content, headers={**headers, **h})  # noqa: E731
    # truncated payloads: the last input's bytes run short
    oip_error(post(body[:-1]), 400, "input 'user_seconds_since_registration'", "past the end")
    oip_error(post(body[: size + 5]), 400, "past the end")
    # a header length past the body, or not a number, or cutting the JSON
    oip_error(
        post(body, **{"Inference-Header-Content-Length": str(len(body) + 1)}),
        400,
        "Inference-Header-Content-Length",
    )
    oip_error(post(body, **{"Inference-Header-Content-Length": "-3"}), 400, "Inference-Header-Content-Length")
    for odd in ("1e3", "+12", " 12", "0x10", "9" * 13):
        oip_error(
            post(body, **{"Inference-Header-Content-Length": odd}), 400, "Inference-Header-Content-Length"
        )
    oip_error(post(body, **{"Inference-Header-Content-Length": str(size - 1)}), 400, "JSON")
    # bytes nobody claimed
    oip_error(post(body + b"\0"), 400, "1 bytes after")
    # binary_data_size without the header, or with data, or not a count
    no_header = {k: v for k, v in headers.items() if k != "Inference-Header-Content-Length"}
    oip_error(
        client.post(INFER, content=body[:size], headers=no_header), 400, "Inference-Header-Content-Length"
    )
    header = orjson.loads(body[:size])
    header["inputs"][0]["data"] = [1, 2, 3]
    oip_error(client.post(INFER, json=header), 422, "input 'longest_repeated_char_added'", "both")
    header["inputs"][0].pop("data")
    for odd in (-12, True, 12.0, "12"):
        header["inputs"][0]["parameters"]["binary_data_size"] = odd
        again = orjson.dumps(header)
        oip_error(
            client.post(
                INFER,
                content=again + body[size:],
                headers={"Inference-Header-Content-Length": str(len(again))},
            ),
            422,
            "input 'longest_repeated_char_added'",
            "binary_data_size must be a byte count",
        )
    # a size far past the body (no allocation, no wrap-around)
    header["inputs"][0]["parameters"]["binary_data_size"] = 2**62
    again = orjson.dumps(header)
    oip_error(
        client.post(
            INFER, content=again + body[size:], headers={"Inference-Header-Content-Length": str(len(again))}
        ),
        400,
        "input 'longest_repeated_char_added'",
        "goes past the end of the body",
    )


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (_bytes_tensor([b"science", b"art"])[:-1], ["input 'topic'", "BYTES element 1", "says 3 bytes"]),
        (_bytes_tensor([b"science", b"art"])[:13], ["input 'topic'", "length of element 1"]),
        (_bytes_tensor([b"science", b"art", b"x"]), ["input 'topic'", "5 bytes left after"]),
        (_bytes_tensor([b"science", b"\xff\xfe"]), ["input 'topic'", "UTF-8"]),
        (
            (2**31).to_bytes(4, "little") + b"abc" + _bytes_tensor([b"x"]),
            ["input 'topic'", "says 2147483648"],
        ),
    ],
)
def test_bad_bytes_tensors_are_refused(client: AppClient, raw: bytes, names: list[str]) -> None:
    tensors = [
        ("length", "FP64", [2], np.array([900.0, 2000.0]).tobytes()),
        ("refs", "INT64", [2], np.array([1, 4], dtype="<i8").tobytes()),
        ("topic", "BYTES", [2], raw),
    ]
    body, headers = binary_request(tensors)
    oip_error(client.post("/v2/models/quality/infer", content=body, headers=headers), 422, *names)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(min_value=1, max_value=200),
    extra=st.binary(min_size=0, max_size=16),
    length_delta=st.integers(-40, 40),
)
def test_mangled_binary_bodies_never_score_or_fail_the_server(
    client: AppClient, cut: int, extra: bytes, length_delta: int
) -> None:
    """A valid body cut short, grown, or with its header length moved: always a 4xx, never a score."""
    body, headers = binary_request(_tensors(4))
    size = int(headers["Inference-Header-Content-Length"])
    mangled = body[: len(body) - cut] + extra
    length = max(0, size + length_delta)
    if len(mangled) == len(body) and length == size:
        return  # the same sizes: other values, not misread bytes (covered above)
    response = client.post(
        INFER, content=mangled, headers={**headers, "Inference-Header-Content-Length": str(length)}
    )
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["error"], str)


# --- limits ---------------------------------------------------------------------------------------


def test_the_limits_of_json_apply_to_binary(trained_home: Path) -> None:
    limited = Settings.load(home=trained_home, environ={}, max_items_per_request=4, max_body_bytes=4096)
    with AppClient(create_app(limited)) as client:
        body, headers = binary_request(raw_tensors(edit_items(4)))
        assert client.post(INFER, content=body, headers=headers).status_code == 200
        body, headers = binary_request(raw_tensors(edit_items(5)))
        oip_error(client.post(INFER, content=body, headers=headers), 413, "5 rows", "4")
        oip_error(client.post(INFER, json={"inputs": json_inputs(edit_items(5))}), 413, "5 rows")
        # A shape is refused before its bytes are read: no allocation for a billion rows.
        huge = [(n, d, [10**9], b"") for n, d, _s, _r in raw_tensors(edit_items(1))]
        body, headers = binary_request(huge)
        oip_error(client.post(INFER, content=body, headers=headers), 413, "1000000000 rows")
        # The body limit, before anything is read, in the protocol's shape.
        oip_error(client.post(INFER, content=b"\0" * 5000, headers=headers), 413, "4096 bytes")


def test_compressed_bodies_are_inflated_within_the_body_limit(trained_home: Path) -> None:
    limited = Settings.load(home=trained_home, environ={}, max_body_bytes=4096)
    with AppClient(create_app(limited)) as client:
        body, headers = binary_request(raw_tensors(edit_items(3)))
        plain = client.post(INFER, content=body, headers=headers).json()
        for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
            answer = client.post(INFER, content=packed, headers={**headers, "Content-Encoding": encoding})
            assert answer.json() == plain
        bomb = gzip.compress(b"{" + b" " * 100_000)
        assert len(bomb) < 4096
        oip_error(client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"}), 413, "inflated")
        oip_error(
            client.post(
                INFER, content=gzip.compress(body)[:-9], headers={**headers, "Content-Encoding": "gzip"}
            ),
            400,
            "truncated",
        )
        oip_error(client.post(INFER, content=body, headers={**headers, "Content-Encoding": "br"}), 400, "br")


def test_an_input_named_after_the_attribute_declares_the_group(mitigated_home: Path) -> None:
    """A version with per-group thresholds on an attribute that is no feature takes it as one more
    input; the prediction is decided at that group's threshold, as /v1 decides it."""
    items = edit_items(8, seed=31)
    with AppClient(create_app(Settings.load(home=mitigated_home, environ={}))) as client:
        meta = client.get("/v2/models/fairctx").json()
        assert {"name": "user_is_anon", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
        assert {"name": "threshold", "datatype": "FP64", "shape": [-1]} in meta["outputs"]
        body = client.post("/v2/models/fairctx/infer", json={"inputs": json_inputs(items)}).json()
        predictions = next(o for o in body["outputs"] if o["name"] == "prediction")["data"]
        thresholds = next(o for o in body["outputs"] if o["name"] == "threshold")["data"]
        v1_items = [
            {
                "id": i["id"],
                "features": {k: v for k, v in i["features"].items() if k != "user_is_anon"},
                "context": {"user_is_anon": i["features"]["user_is_anon"]},
            }
            for i in items
        ]
        v1 = client.post("/v1/scores", json={"models": ["fairctx"], "items": v1_items}).json()["scores"]
        assert predictions == [v1[i["id"]]["fairctx"]["prediction"] for i in items]
        assert thresholds == [v1[i["id"]]["fairctx"]["decision"]["threshold"] for i in items]
        assert {v1[i["id"]]["fairctx"]["decision"]["group"] for i in items} <= {"True", "False"}
        bad = [t for t in json_inputs(items) if t["name"] != "user_is_anon"]
        bad.append({"name": "user_is_anon", "datatype": "BYTES", "shape": [8], "data": ["maybe"] * 8})
        oip_error(client.post("/v2/models/fairctx/infer", json={"inputs": bad}), 422, "user_is_anon", "maybe")


def test_only_a_version_with_per_group_thresholds_answers_a_threshold_output(client: AppClient) -> None:
    asked = {"inputs": json_inputs(edit_items(2)), "outputs": [{"name": "threshold"}]}
    oip_error(client.post(INFER, json=asked), 422, "'threshold'", "per-group thresholds only")
    outputs = [o["name"] for o in client.get("/v2/models/damaging").json()["outputs"]]
    assert outputs == ["probability", "prediction"]
