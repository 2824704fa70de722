"""Real Open Inference Protocol clients against ``assay serve``: Triton's ``tritonclient.http`` and
``tritonclient.grpc``, each with its default settings, over one server with two workers and
``--grpc-port`` (so that both workers share the gRPC port).

HTTP runs binary (the client's default: ``set_data_from_numpy`` sends raw bytes and asks for binary
outputs) and JSON (``binary_data=False``); gRPC sends ``raw_input_contents`` as Triton's client
always does. Every datatype assay takes is checked by scoring the values its bytes hold against
``/v1/scores`` of the same values.

KServe's Python client (REST and gRPC, its defaults) runs in its own environment, since it requires
pandas < 3 (``ASSAY_TEST_KSERVE_PYTHON``, built by ``.ci/run``; the test skips without it), through
tests/web/kserve_client.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.reviewing import Server, free_port
from tests.servers import FEATURES, edit_items

pytestmark = pytest.mark.slow

BOOLEANS = ("user_is_anon", "user_is_bot_or_sysop")
NUMERIC_TYPES = [
    "FP16",
    "FP32",
    "FP64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
]
NUMPY = {
    "BOOL": np.bool_,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}


@dataclass(frozen=True)
class Served:
    http: str  # host:port
    grpc: str  # host:port
    url: str  # http://host:port


@pytest.fixture(scope="module")
def served(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("oip-clients")
    shutil.copytree(trained_template, root / "copy")
    grpc_port = free_port()
    server = Server(
        root / "copy" / "home", root / "server.log", args=["--workers", "2", "--grpc-port", str(grpc_port)]
    ).start(timeout_s=180)
    try:
        yield Served(f"127.0.0.1:{server.port}", f"127.0.0.1:{grpc_port}", server.url)
    finally:
        server.stop()


@dataclass(frozen=True)
class Transport:
    name: str
    module: Any
    binary: bool  # HTTP: send inputs as binary (the client's default) or as JSON

    def client(self, served: Served) -> Any:
        return self.module.InferenceServerClient(served.grpc if self.module is triton_grpc else served.http)

    def tensor(self, name: str, array: np.ndarray) -> Any:
        tensor = self.module.InferInput(name, list(array.shape), _datatype(array))
        if self.module is triton_http:
            tensor.set_data_from_numpy(array, binary_data=self.binary)
        else:
            tensor.set_data_from_numpy(array)
        return tensor


TRANSPORTS = [
    Transport("http-binary", triton_http, True),
    Transport("http-json", triton_http, False),
    Transport("grpc", triton_grpc, True),
]


@pytest.fixture(params=TRANSPORTS, ids=lambda t: t.name)
def transport(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def client(served: Served, transport: Transport) -> Iterator[Any]:
    """The transport's client of the module's server, closed after the test (its sockets with it)."""
    opened = transport.client(served)
    try:
        yield opened
    finally:
        opened.close()


def _datatype(array: np.ndarray) -> str:
    if array.dtype == np.object_:
        return "BYTES"
    return next(name for name, kind in NUMPY.items() if array.dtype == kind)


def columns_as(items: list[dict[str, Any]], numeric: str) -> dict[str, np.ndarray]:
    """Each feature's column as ``numeric`` (booleans as BOOL), clipped to what the type holds."""
    out = {}
    for name in FEATURES:
        values = np.array([item["features"][name] for item in items], dtype=np.float64)
        if name in BOOLEANS:
            out[name] = values.astype(np.bool_)
            continue
        kind = NUMPY[numeric]
        if np.issubdtype(kind, np.integer):
            info = np.iinfo(kind)
            values = np.clip(np.round(values), info.min, min(info.max, 2**53))
        elif kind is np.float16:
            values = np.clip(values, -65504, 65504)
        out[name] = values.astype(kind)
    return out


def v1(served: Served, model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items = [{"id": str(k), "features": row} for k, row in enumerate(rows)]
    response = httpx.post(served.url + "/v1/scores", json={"models": [model], "items": items}, timeout=30)
    assert response.status_code == 200, response.text
    return [response.json()["scores"][str(k)][model] for k in range(len(rows))]


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_and_metadata(served: Served, transport: Transport, client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("damaging") and client.is_model_ready("damaging", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("damaging", "7")
    server = client.get_server_metadata(**({"as_json": True} if transport.module is triton_grpc else {}))
    assert server["name"] == "assay" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(
        "quality", **({"as_json": True} if transport.module is triton_grpc else {})
    )
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "length": "FP64",
        "refs": "FP64",
        "topic": "BYTES",
    }
    assert [o["name"] for o in meta["outputs"]] == ["probability", "prediction"]
    assert meta["versions"] == ["1"]
    error = refused(lambda: client.get_model_metadata("nope"))
    assert "unknown model 'nope'" in error.message()


@pytest.mark.parametrize("numeric", NUMERIC_TYPES)
def test_every_numeric_datatype(served: Served, transport: Transport, client: Any, numeric: str) -> None:
    items = edit_items(6, seed=21)
    cols = columns_as(items, numeric)
    result = client.infer("damaging", [transport.tensor(name, cols[name]) for name in FEATURES])
    probability, prediction = result.as_numpy("probability"), result.as_numpy("prediction")
    assert probability.shape == (6, 2) and prediction.dtype == np.bool_
    expected = v1(served, "damaging", [{n: cols[n][k].item() for n in FEATURES} for k in range(6)])
    assert probability[:, 0].tolist() == pytest.approx(
        [s["probability"]["true"] for s in expected], abs=1e-12
    )
    assert prediction.tolist() == [s["prediction"] for s in expected]


def test_categories_as_bytes_and_multiclass_outputs(
    served: Served, transport: Transport, client: Any
) -> None:
    rows = [
        {"length": 900.0, "refs": 1, "topic": "science"},
        {"length": 25000.0, "refs": 60, "topic": "art"},
        {"length": 4000.0, "refs": 7, "topic": "sport"},
    ]
    inputs = [
        transport.tensor("length", np.array([r["length"] for r in rows], dtype=np.float32)),
        transport.tensor("refs", np.array([r["refs"] for r in rows], dtype=np.int32)),
        transport.tensor("topic", np.array([r["topic"].encode() for r in rows], dtype=np.object_)),
    ]
    result = client.infer("quality", inputs)
    expected = v1(served, "quality", rows)
    assert [p.decode() for p in result.as_numpy("prediction").tolist()] == [s["prediction"] for s in expected]
    probability = result.as_numpy("probability")
    classes = _classes(result, transport)
    for k, score in enumerate(expected):
        assert probability[k].tolist() == pytest.approx([score["probability"][c] for c in classes])
    # A category the model never saw is refused, naming the input.
    inputs[2] = transport.tensor("topic", np.array([b"science", b"chess", b"art"], dtype=np.object_))
    error = refused(lambda: client.infer("quality", inputs))
    assert "input 'topic'" in error.message() and "chess" in error.message()


def _classes(result: Any, transport: Transport) -> list[str]:
    if transport.module is triton_grpc:
        import json

        return list(json.loads(result.get_output("probability").parameters["classes"].string_param))
    output = result.get_output("probability")
    return list(output["parameters"]["classes"])


def test_shape_errors_and_bad_values_name_the_input(
    served: Served, transport: Transport, client: Any
) -> None:
    cols = columns_as(edit_items(4), "FP32")
    inputs = [transport.tensor(name, cols[name]) for name in FEATURES]
    short = [transport.tensor("words_added", cols["words_added"][:3]), *inputs[:1], *inputs[2:]]
    error = refused(lambda: client.infer("damaging", short))
    assert "input 'words_added' has 3 rows" in error.message() or "has 3" in error.message()
    wide = [
        transport.tensor("words_added", np.stack([cols["words_added"]] * 2, axis=1)),
        *inputs[:1],
        *inputs[2:],
    ]
    assert (
        "input 'words_added': shape must be [n] or [n, 1]"
        in refused(lambda: client.infer("damaging", wide)).message()
    )
    # [n, 1] is a column too.
    column = [transport.tensor("words_added", cols["words_added"].reshape(4, 1)), *inputs[:1], *inputs[2:]]
    assert client.infer("damaging", column).as_numpy("prediction").shape == (4,)
    nan = cols["badwords_prop_delta_sum"].copy()
    nan[2] = np.nan
    with_nan = [
        transport.tensor("badwords_prop_delta_sum", nan),
        *[t for t in inputs if t.name() != "badwords_prop_delta_sum"],
    ]
    error = refused(lambda: client.infer("damaging", with_nan))
    if transport.name == "http-json":  # the client writes NaN into JSON, which JSON does not have
        assert error.status() == "400" and "not valid JSON" in error.message()
    else:
        assert "input 'badwords_prop_delta_sum': element 2 is nan" in error.message()
    missing = inputs[1:]
    assert (
        "input 'longest_repeated_char_added' is missing"
        in refused(lambda: client.infer("damaging", missing)).message()
    )
    status = refused(lambda: client.infer("damaging", missing)).status()
    assert status in ("422", "StatusCode.INVALID_ARGUMENT")


def test_unknown_models_and_version_addressing(served: Served, transport: Transport, client: Any) -> None:
    cols = columns_as(edit_items(2), "FP64")
    inputs = [transport.tensor(name, cols[name]) for name in FEATURES]
    error = refused(lambda: client.infer("nope", inputs))
    assert "unknown model 'nope'" in error.message() and error.status() in ("404", "StatusCode.NOT_FOUND")
    by_version = client.infer("damaging", inputs, model_version="1", request_id="req-7")
    by_alias = client.infer("damaging", inputs, model_version="candidate")
    assert by_version.as_numpy("probability").tolist() == by_alias.as_numpy("probability").tolist()
    response = by_version.get_response(**({"as_json": True} if transport.module is triton_grpc else {}))
    assert response["model_version"] == "1" and response["id"] == "req-7"
    error = refused(lambda: client.infer("damaging", inputs, model_version="7"))
    assert "no version 7" in error.message() and error.status() in ("404", "StatusCode.NOT_FOUND")


def test_requested_outputs_and_classification(served: Served, transport: Transport, client: Any) -> None:
    cols = columns_as(edit_items(3), "FP64")
    inputs = [transport.tensor(name, cols[name]) for name in FEATURES]
    module = transport.module
    only = client.infer("damaging", inputs, outputs=[module.InferRequestedOutput("prediction")])
    assert only.as_numpy("probability") is None and only.as_numpy("prediction").shape == (3,)
    full = client.infer("damaging", inputs).as_numpy("probability")
    top = client.infer(
        "damaging", inputs, outputs=[module.InferRequestedOutput("probability", class_count=2)]
    )
    labels = top.as_numpy("probability")
    assert labels.shape == (3, 2)
    for k in range(3):
        first = labels[k, 0].decode() if isinstance(labels[k, 0], bytes) else labels[k, 0]
        value, index, _label = first.split(":")
        assert float(value) == pytest.approx(full[k].max(), abs=1e-6) and int(index) == int(full[k].argmax())
    error = refused(lambda: client.infer("damaging", inputs, outputs=[module.InferRequestedOutput("colour")]))
    assert "output 'colour'" in error.message()


# --- KServe's Python client, in its own environment ---------------------------------------------

KSERVE_PYTHON = os.environ.get("ASSAY_TEST_KSERVE_PYTHON", "")


@pytest.mark.skipif(
    not (KSERVE_PYTHON and Path(KSERVE_PYTHON).is_file()),
    reason="ASSAY_TEST_KSERVE_PYTHON names no Python with KServe (.ci/run builds one from constraints-kserve.txt)",
)
def test_kserve_clients_with_their_defaults(served: Served, tmp_path: Path) -> None:
    """KServe 0.21's REST client (binary and JSON, FP64 and FP32) and gRPC client, run by
    tests/web/kserve_client.py in KServe's own environment (it needs pandas < 3)."""
    items = edit_items(6, seed=5)
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "columns": {name: [item["features"][name] for item in items] for name in FEATURES},
                "booleans": list(BOOLEANS),
            }
        )
    )
    script = Path(__file__).with_name("kserve_client.py")
    done = subprocess.run(
        [KSERVE_PYTHON, str(script), served.url, served.grpc, "damaging", str(request)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    assert all(
        results[f"{kind} {what}"] for kind in ("rest", "grpc") for what in ("live", "ready", "model ready")
    )
    exact = [score["probability"]["true"] for score in v1(served, "damaging", [i["features"] for i in items])]
    cols32 = columns_as(items, "FP32")
    rounded = [{name: cols32[name][k].item() for name in FEATURES} for k in range(len(items))]
    as_fp32 = [score["probability"]["true"] for score in v1(served, "damaging", rounded)]
    for key in ("rest FP64 binary=True", "rest FP64 binary=False", "grpc FP64", "grpc version 1"):
        assert [row[0] for row in results[key]["probability"]] == pytest.approx(exact, abs=1e-12), key
    for key in ("rest FP32 binary=True", "rest FP32 binary=False", "grpc FP32"):
        assert [row[0] for row in results[key]["probability"]] == pytest.approx(as_fp32, abs=1e-12), key
    for key in ("rest nan", "grpc nan"):
        assert f"input '{FEATURES[0]}'" in results[key]["error"] and "finite" in results[key]["error"], (
            results
        )
    assert "unknown model 'nosuchmodel'" in results["rest unknown model"]["error"]
    assert "no version 9" in results["grpc version 9"]["error"]
