"""The gRPC endpoint (``assay serve --grpc-port``) beyond what Triton's client sends: typed contents,
every refusal and its status, the limits, metrics, promotions; the generated modules are current.

Triton's own clients are in tests/web/test_oip_clients.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from assay.cli import main
from assay.errors import InvalidInput
from assay.settings import Settings
from assay.web.oip_proto import generate
from assay.web.oip_proto import grpc_service_pb2 as pb
from assay.web.oip_proto import grpc_service_pb2_grpc as pb_grpc
from assay.workspace import Workspace
from tests.reviewing import Server, free_port
from tests.servers import FEATURES, add_version, edit_items

BOOLEANS = ("user_is_anon", "user_is_bot_or_sysop")
MAX_ROWS = 50
MAX_BODY = 64 * 1024


def test_the_generated_modules_are_those_of_the_proto(tmp_path: Path) -> None:
    """Checked-in protoc output must be what ``python -m assay.web.oip_proto.generate`` writes now."""
    for fresh in generate.generate(tmp_path):
        checked_in = generate.SRC / fresh.relative_to(tmp_path)
        assert fresh.read_bytes() == checked_in.read_bytes(), f"{checked_in} is stale: regenerate it"


def test_the_per_client_limit_counts_calls_in_flight(trained_home: Path) -> None:
    """A second call from the same address while one is in flight is refused (RESOURCE_EXHAUSTED)."""
    from assay.web.api import Services
    from assay.web.metrics import Metrics
    from assay.web.oip_grpc import InferenceService

    settings = Settings.load(home=trained_home, environ={}, max_concurrent_per_client=1)

    class Aborted(Exception):
        pass

    class Context:
        def __init__(self, peer: str) -> None:
            self._peer = peer
            self.aborted: tuple[grpc.StatusCode, str] | None = None

        def peer(self) -> str:
            return self._peer

        def abort(self, code: grpc.StatusCode, message: str) -> None:
            self.aborted = (code, message)
            raise Aborted

    services = Services(settings, None, None, None, Metrics(), True)  # type: ignore[arg-type]
    service = InferenceService(services, None)  # type: ignore[arg-type]
    first, second, other = (
        Context("ipv4:10.0.0.1:5000"),
        Context("ipv4:10.0.0.1:5001"),
        Context("ipv6:[::1]:7"),
    )

    def nested() -> str:
        with pytest.raises(Aborted):
            service._answer("ModelInfer", second, lambda: "never")
        return service._answer("ModelInfer", other, lambda: "other address")

    assert service._answer("ModelInfer", first, nested) == "other address"
    assert second.aborted is not None and second.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 1 requests in flight" in second.aborted[1]
    assert service._answer("ModelInfer", second, lambda: "free again") == "free again"

    def failing() -> None:
        raise InvalidInput("input 'x': no")

    bad = Context("ipv4:10.0.0.2:1")
    with pytest.raises(Aborted):
        service._answer("ModelInfer", bad, failing)
    assert bad.aborted == (grpc.StatusCode.INVALID_ARGUMENT, "input 'x': no")

    def bug() -> None:
        raise RuntimeError("secret detail")

    with pytest.raises(Aborted):
        service._answer("ModelInfer", bad, bug)
    assert bad.aborted is not None and bad.aborted[0] == grpc.StatusCode.INTERNAL
    assert "secret" not in bad.aborted[1]


def test_serve_refuses_a_grpc_port_it_cannot_use(trained_home: Path) -> None:
    command = ["--home", str(trained_home), "serve", "--port", "18001"]
    same = CliRunner().invoke(main, [*command, "--grpc-port", "18001"])
    assert same.exit_code != 0 and "other than the HTTP port" in same.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = CliRunner().invoke(main, [*command, "--grpc-port", str(taken.getsockname()[1])])
    assert busy.exit_code != 0 and "cannot listen for gRPC" in busy.output


# --- a real server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    url: str
    stub: Any
    home: Path


@pytest.fixture(scope="module")
def served(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("grpc")
    shutil.copytree(trained_template, root / "copy")
    home = root / "copy" / "home"
    grpc_port = free_port()
    env = {
        "ASSAY_MAX_ITEMS_PER_REQUEST": str(MAX_ROWS),
        "ASSAY_MAX_BODY_BYTES": str(MAX_BODY),
        "ASSAY_ALIAS_REFRESH_S": "0.2",
    }
    server = Server(home, root / "server.log", env=env, args=["--grpc-port", str(grpc_port)]).start(
        timeout_s=180
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        yield Served(server.url, pb_grpc.GRPCInferenceServiceStub(channel), home)
    finally:
        channel.close()
        server.stop()


def _request(model: str = "damaging", version: str = "") -> Any:
    return pb.ModelInferRequest(model_name=model, model_version=version)


def typed_request(items: list[dict[str, Any]], numeric: str = "FP64") -> tuple[Any, list[dict[str, Any]]]:
    """Every feature as typed contents (booleans as BOOL, the rest as ``numeric``), and the items sent."""
    request = _request()
    field = {
        "FP64": "fp64_contents",
        "FP32": "fp32_contents",
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "UINT32": "uint_contents",
        "UINT64": "uint64_contents",
    }[numeric]
    sent: list[dict[str, Any]] = [{"features": {}} for _ in items]
    for name in FEATURES:
        values = [item["features"][name] for item in items]
        if name in BOOLEANS:
            request.inputs.add(name=name, datatype="BOOL", shape=[len(values)]).contents.bool_contents.extend(
                values
            )
        else:
            if numeric != "FP64" and numeric != "FP32":
                values = [max(0, round(v)) for v in values]
            elif numeric == "FP32":
                values = np.asarray(values, dtype=np.float32).tolist()  # what 32 bits hold
            tensor = request.inputs.add(name=name, datatype=numeric, shape=[len(values)])
            getattr(tensor.contents, field).extend(values)
        for row, value in zip(sent, values, strict=True):
            row["features"][name] = value
    return request, sent


def raw_request(items: list[dict[str, Any]]) -> Any:
    request = _request()
    for name in FEATURES:
        values = [item["features"][name] for item in items]
        datatype, dtype = ("BOOL", "?") if name in BOOLEANS else ("FP64", "<f8")
        request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        request.raw_input_contents.append(np.asarray(values, dtype=dtype).tobytes())
    return request


def probabilities(response: Any) -> np.ndarray:
    assert [o.name for o in response.outputs] == ["probability", "prediction"]
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(shape)


def refused(call: Any, code: grpc.StatusCode, *names: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    assert error.code() == code, error.details()
    for name in names:
        assert name in error.details(), error.details()
    return str(error.details())


@pytest.mark.slow
@pytest.mark.parametrize("numeric", ["FP64", "FP32", "INT32", "INT64", "UINT32", "UINT64"])
def test_typed_contents_score_like_raw_contents(served: Served, numeric: str) -> None:
    typed, sent = typed_request(edit_items(5, seed=4), numeric)
    response = served.stub.ModelInfer(typed)
    raw = served.stub.ModelInfer(raw_request(sent))  # the same values, sent raw as FP64
    assert probabilities(response).ravel().tolist() == pytest.approx(
        probabilities(raw).ravel().tolist(), abs=1e-12
    )
    assert response.model_name == "damaging" and response.model_version == "1"
    assert json.loads(response.outputs[0].parameters["classes"].string_param) == ["true", "false"]


@pytest.mark.slow
def test_bytes_contents_and_multiclass(served: Served) -> None:
    request = _request("quality", "1")
    request.inputs.add(name="length", datatype="FP64", shape=[2]).contents.fp64_contents.extend(
        [900.0, 30000.0]
    )
    request.inputs.add(name="refs", datatype="INT32", shape=[2, 1]).contents.int_contents.extend([1, 70])
    request.inputs.add(name="topic", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"science", b"art"]
    )
    request.outputs.add(name="prediction")
    response = served.stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["prediction"] and response.outputs[0].datatype == "BYTES"
    raw = response.raw_output_contents[0]
    predictions, k = [], 0
    while k < len(raw):
        size = int.from_bytes(raw[k : k + 4], "little")
        predictions.append(raw[k + 4 : k + 4 + size].decode())
        k += 4 + size
    items = [
        {"id": "a", "features": {"length": 900.0, "refs": 1, "topic": "science"}},
        {"id": "b", "features": {"length": 30000.0, "refs": 70, "topic": "art"}},
    ]
    v1 = httpx.post(served.url + "/v1/scores", json={"models": ["quality"], "items": items}).json()["scores"]
    assert predictions == [v1["a"]["quality"]["prediction"], v1["b"]["quality"]["prediction"]]
    request.inputs[2].contents.bytes_contents[1] = b"\xff\xfe"
    refused(
        lambda: served.stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, "input 'topic'", "UTF-8"
    )


def _mutated(change: Any) -> Any:
    request = raw_request(edit_items(3))
    change(request)
    return request


def _typed(change: Any) -> Any:
    request, _ = typed_request(edit_items(3))
    change(request)
    return request


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_of", "code", "names"),
    [
        (
            lambda: _mutated(lambda r: r.raw_input_contents.pop()),
            "INVALID_ARGUMENT",
            ["raw_input_contents has 8 entries for 9 inputs"],
        ),
        (
            lambda: _mutated(lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-1])),
            "INVALID_ARGUMENT",
            ["input 'longest_repeated_char_added'", "23 bytes", "24"],
        ),
        (
            lambda: _mutated(lambda r: r.raw_input_contents.__setitem__(6, b"\x01\x07\x00")),
            "INVALID_ARGUMENT",
            ["input 'user_is_anon'", "0 or 1"],
        ),
        (
            lambda: _mutated(
                lambda r: r.raw_input_contents.__setitem__(3, np.array([0.1, np.inf, 0.2]).tobytes())
            ),
            "INVALID_ARGUMENT",
            ["input 'badwords_prop_delta_sum'", "element 1 is inf"],
        ),
        (
            lambda: _mutated(lambda r: r.inputs[0].contents.fp64_contents.append(1.0)),
            "INVALID_ARGUMENT",
            ["input 'longest_repeated_char_added' has contents"],
        ),
        (
            lambda: _mutated(lambda r: setattr(r.inputs[1], "datatype", "BF16")),
            "INVALID_ARGUMENT",
            ["input 'words_added'", "BF16"],
        ),
        (
            lambda: _mutated(lambda r: setattr(r.inputs[1], "datatype", "DOUBLE")),
            "INVALID_ARGUMENT",
            ["input 'words_added'", "DOUBLE"],
        ),
        (
            lambda: _mutated(lambda r: r.inputs[2].shape.append(2)),
            "INVALID_ARGUMENT",
            ["input 'words_removed'", "shape"],
        ),
        (
            lambda: _mutated(
                lambda r: (
                    r.inputs[2]
                    .parameters["shared_memory_region"]
                    .MergeFrom(pb.InferParameter(string_param="r"))
                )
            ),
            "INVALID_ARGUMENT",
            ["shared memory"],
        ),
        (lambda: _mutated(lambda r: setattr(r, "model_name", "nope")), "NOT_FOUND", ["unknown model 'nope'"]),
        (lambda: _mutated(lambda r: setattr(r, "model_version", "8")), "NOT_FOUND", ["no version 8"]),
        (lambda: _mutated(lambda r: r.outputs.add(name="colour")), "INVALID_ARGUMENT", ["output 'colour'"]),
        (
            lambda: _typed(lambda r: r.inputs[0].contents.fp64_contents.pop()),
            "INVALID_ARGUMENT",
            ["input 'longest_repeated_char_added'", "2 values"],
        ),
        (
            lambda: _typed(lambda r: r.inputs[0].contents.fp64_contents.__setitem__(1, float("nan"))),
            "INVALID_ARGUMENT",
            ["input 'longest_repeated_char_added'", "nan"],
        ),
        (
            lambda: _typed(lambda r: setattr(r.inputs[0], "datatype", "FP16")),
            "INVALID_ARGUMENT",
            ["input 'longest_repeated_char_added'", "FP16 has no typed contents"],
        ),
        (
            lambda: _typed(
                lambda r: (
                    setattr(r.inputs[1], "datatype", "INT8"),
                    r.inputs[1].contents.ClearField("fp64_contents"),
                    r.inputs[1].contents.int_contents.extend([1, 300, 2]),
                )
            ),
            "INVALID_ARGUMENT",
            ["input 'words_added'", "300 does not fit in INT8"],
        ),
        (
            lambda: _typed(lambda r: r.inputs.pop()),
            "INVALID_ARGUMENT",
            ["input 'user_seconds_since_registration' is missing"],
        ),
        (lambda: _request(), "INVALID_ARGUMENT", ["inputs must be a non-empty list"]),
        (
            lambda: _mutated(lambda r: r.inputs[2].shape.__setitem__(0, -3)),
            "INVALID_ARGUMENT",
            ["input 'words_removed'", "got [-3]"],
        ),
        (
            lambda: _mutated(
                lambda r: (
                    setattr(r.inputs[2], "datatype", "BYTES"),
                    r.raw_input_contents.__setitem__(2, b"\xff\xff\xff\x7fab"),
                )
            ),
            "INVALID_ARGUMENT",
            ["input 'words_removed'", "says 2147483647 bytes"],
        ),
        (
            lambda: _typed(lambda r: r.inputs[1].contents.int64_contents.extend([7, 7, 7])),
            "INVALID_ARGUMENT",
            ["input 'words_added'", "FP64 values go in fp64_contents", "int64_contents"],
        ),
        (
            lambda: _mutated(
                lambda r: (
                    r.outputs.add(name="probability")
                    .parameters["classification"]
                    .MergeFrom(pb.InferParameter(string_param="2"))
                )
            ),
            "INVALID_ARGUMENT",
            ["output 'probability'", "classification must be a count"],
        ),
    ],
)
def test_bad_requests_are_refused_naming_the_input(
    served: Served, request_of: Any, code: str, names: list[str]
) -> None:
    refused(lambda: served.stub.ModelInfer(request_of()), getattr(grpc.StatusCode, code), *names)


@pytest.mark.slow
def test_the_limits_of_http_apply(served: Served) -> None:
    assert served.stub.ModelInfer(raw_request(edit_items(MAX_ROWS))).outputs[0].shape[0] == MAX_ROWS
    refused(
        lambda: served.stub.ModelInfer(raw_request(edit_items(MAX_ROWS + 1))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{MAX_ROWS + 1} rows is more than the {MAX_ROWS}",
    )
    big = raw_request(edit_items(2))
    big.raw_input_contents[0] = b"\0" * MAX_BODY
    refused(lambda: served.stub.ModelInfer(big), grpc.StatusCode.RESOURCE_EXHAUSTED)


@pytest.mark.slow
def test_health_metadata_and_metrics(served: Served) -> None:
    assert served.stub.ServerLive(pb.ServerLiveRequest()).live
    assert served.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert served.stub.ModelReady(pb.ModelReadyRequest(name="damaging", version="1")).ready
    assert not served.stub.ModelReady(pb.ModelReadyRequest(name="damaging", version="9")).ready
    assert list(served.stub.ServerMetadata(pb.ServerMetadataRequest()).extensions) == [
        "binary_tensor_data",
        "classification",
    ]
    meta = served.stub.ModelMetadata(pb.ModelMetadataRequest(name="damaging"))
    assert [i.name for i in meta.inputs] == FEATURES and list(meta.outputs[0].shape) == [-1, 2]
    refused(
        lambda: served.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    served.stub.ModelInfer(raw_request(edit_items(2)))
    text = httpx.get(served.url + "/metrics").text
    assert (
        'assay_requests_total{method="GRPC",route="/inference.GRPCInferenceService/ModelInfer",status="OK"}'
        in text
    )
    assert 'route="/inference.GRPCInferenceService/ModelMetadata",status="NOT_FOUND"' in text
    assert 'assay_errors_total{code="unknown_model"}' in text


@pytest.mark.slow
def test_grpc_follows_a_promotion(served: Served) -> None:
    ws = Workspace.open(Settings.load(home=served.home, environ={}))
    try:
        new = add_version(ws, "damaging", alias="production")
    finally:
        ws.close()
    deadline = time.monotonic() + 30
    while served.stub.ModelInfer(raw_request(edit_items(1))).model_version != str(new):
        assert time.monotonic() < deadline, "the gRPC endpoint did not follow the promotion"
        time.sleep(0.1)
    assert served.stub.ModelInfer(_version(raw_request(edit_items(1)), "1")).model_version == "1"


def _version(request: Any, version: str) -> Any:
    request.model_version = version
    return request
