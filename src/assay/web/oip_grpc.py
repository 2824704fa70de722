"""The Open Inference Protocol over gRPC: ``GRPCInferenceService``, served beside the HTTP API.

``assay serve --grpc-port N`` (``ASSAY_GRPC_PORT``) starts it in each worker's
lifespan, next to the app, over the same ``Services``: the same scorer and
model table (alias moves are followed the same way), the same checks of input
tensors (``web.tensors``) and the same inference (``web.oip.infer``). With
several workers each binds the port with ``SO_REUSEPORT`` and the kernel
spreads connections over them; with one the port is bound alone, so a port in
use is an error at start.

The calls: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata
and ModelInfer. Inputs come as typed ``contents`` or as ``raw_input_contents``
(what Triton's client sends); outputs always go back as
``raw_output_contents``, as Triton answers, with ``probability``'s class order
in its ``classes`` parameter (a JSON list in ``string_param``).

Limits, as over HTTP: a message larger than ``ASSAY_MAX_BODY_BYTES`` is
refused by gRPC itself (RESOURCE_EXHAUSTED); rows per request are capped by
``ASSAY_MAX_ITEMS_PER_REQUEST``; ``ASSAY_MAX_CONCURRENT_TOTAL`` calls at once
per worker (gRPC refuses more, RESOURCE_EXHAUSTED), ``ASSAY_MAX_CONCURRENT_PER_CLIENT``
per client address (RESOURCE_EXHAUSTED); work that is not small and local runs
under ``ASSAY_SCORING_TIMEOUT_S`` (DEADLINE_EXCEEDED). There is nothing to
write over gRPC, so no call needs a token. Errors carry their message with the
gRPC status matching the HTTP one; calls are counted in ``/metrics`` as method
``GRPC``, the full method name as the route and the status code's name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import grpc
import numpy as np
import orjson

from assay.errors import AssayError, InvalidInput, ScoringTimeout, TooManyRequests
from assay.web.api import INLINE_WORK, Services
from assay.web.errors import InternalError
from assay.web.oip import (
    InferCall,
    InferResult,
    RequestedOutput,
    check_outputs,
    combine_columns,
    infer,
    model_metadata,
    model_ref,
    server_metadata,
)
from assay.web.oip_proto import grpc_service_pb2 as pb
from assay.web.oip_proto import grpc_service_pb2_grpc as pb_grpc
from assay.web.tensors import check_datatype, check_values, from_raw, rows_of, where

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE = "inference.GRPCInferenceService"
# Threads scoring what is not small and local, under the scoring timeout. Scoring holds the GIL
# except inside the model, so more threads than this only queue inside Python.
THREADS = min(32, 4 * (os.cpu_count() or 1))
# Threads taking calls off grpcio's queue: fewer of them fight less over the GIL, and grpcio's own
# cost per call falls with them (bench/bench_grpc_overhead.py: 104, 141 and 175 µs of CPU per empty
# call with 1, 2 and 4 threads per core); calls beyond them wait in gRPC's queue up to
# ASSAY_MAX_CONCURRENT_TOTAL.
CALL_THREADS = min(16, 2 * (os.cpu_count() or 1))
# Seconds a stopping server lets calls in progress finish.
GRACE_S = 5.0
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Which typed-contents field holds each datatype (FP16 has none: it is sent raw).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's calls over one worker's ``Services``; thread-safe (gRPC calls it from its pool)."""

    def __init__(self, services: Services, executor: ThreadPoolExecutor) -> None:
        self.services = services
        self.settings = services.settings
        self.scorer = services.scorer
        self.metrics = services.metrics
        self.executor = executor  # scoring that must be cut off at the timeout runs here
        self._lock = threading.Lock()
        self._in_flight = 0
        self._per_client: dict[str, int] = {}
        self._series: dict[tuple[str, str], tuple[Any, Any]] = {}  # (method, status) -> (counter, histogram)

    # --- the calls ---------------------------------------------------------------------

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("ServerLive", context, lambda: pb.ServerLiveResponse(live=True))

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        def ready() -> Any:
            # This call counts itself in flight, hence the ``>``.
            saturated = self._in_flight > self.settings.max_concurrent_total
            return pb.ServerReadyResponse(ready=self.scorer.ready and not saturated)

        return self._answer("ServerReady", context, ready)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        def ready() -> Any:
            try:
                self.scorer.model(model_ref(request.name, request.version))
            except AssayError:  # unknown, or a version that cannot be loaded: not ready
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return self._answer("ModelReady", context, ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._answer("ServerMetadata", context, lambda: pb.ServerMetadataResponse(**server_metadata()))

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        def metadata() -> Any:
            meta = model_metadata(self.scorer, model_ref(request.name, request.version))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return self._answer("ModelMetadata", context, metadata)

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        def run() -> Any:
            call = infer_call(request, self.settings.max_items_per_request)
            ref = model_ref(request.model_name, request.model_version)
            result = self._score(context, ref, call.rows, lambda: infer(self.scorer, ref, call))
            return infer_response(result)

        return self._answer("ModelInfer", context, run)

    # --- limits, errors and metrics -------------------------------------------------------------

    def _answer(self, method: str, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        """``fn()``, counted against the per-client limit and in metrics; an error aborts with its status."""
        started = time.perf_counter()
        client = _client(context.peer())
        error: AssayError | None = None
        status = grpc.StatusCode.OK
        with self._lock:
            mine = self._per_client.get(client, 0)
            if mine >= self.settings.max_concurrent_per_client:
                error = TooManyRequests(
                    f"more than {self.settings.max_concurrent_per_client} requests in flight from this client"
                )
            else:
                self._per_client[client] = mine + 1
                self._in_flight += 1
        try:
            if error is None:
                try:
                    return fn()
                except AssayError as exc:
                    error = exc
                except Exception:  # a bug: logged with its traceback, answered without details
                    log.exception("gRPC %s failed", method)
                    error = InternalError("internal error; it has been logged")
                finally:
                    with self._lock:
                        self._in_flight -= 1
                        left = self._per_client[client] - 1
                        if left:
                            self._per_client[client] = left
                        else:
                            del self._per_client[client]
            status = _STATUS.get(error.status, grpc.StatusCode.INTERNAL)
            self.metrics.error(error.code)
            context.abort(status, error.message)
            raise AssertionError("context.abort returns only by raising")  # pragma: no cover
        finally:
            series = self._series.get((method, status.name))
            if series is None:  # prometheus_client's label lookup takes a lock: once per series
                route = f"/{SERVICE}/{method}"
                series = (
                    self.metrics.requests.labels("GRPC", route, status.name),
                    self.metrics.latency.labels(route),
                )
                self._series[(method, status.name)] = series
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    def _score(self, context: grpc.ServicerContext, ref: str, rows: int, fn: Callable[[], T]) -> T:
        """Run ``fn`` here when it is small, local and warm (as HTTP runs it on the event loop);
        else on the executor, given up after the scoring timeout or the client's deadline."""
        svc = self.services
        if rows <= INLINE_WORK and svc.local_io and svc.scorer.warm([ref]):
            return fn()
        timeout = self.settings.scoring_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining, 0.0))
        future: Future[T] = self.executor.submit(fn)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()  # a thread already running cannot be stopped; its result is dropped
            raise ScoringTimeout(f"scoring took longer than {timeout:g}s") from None


def _client(peer: str) -> str:
    """The address of a gRPC peer (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``), without its port."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]")
    return peer or "unknown"


# --- messages -------------------------------------------------------------------------------


def infer_call(request: Any, max_rows: int) -> InferCall:
    """A ``ModelInferRequest`` as an ``InferCall``: typed contents or raw contents, checked like HTTP's."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input",
            field="raw_input_contents",
        )
    if not request.inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors, one per feature", field="inputs")
    columns: dict[str, list[Any] | np.ndarray] = {}
    datatypes: dict[str, str] = {}
    rows: dict[str, int] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{i}] needs a name", field="inputs")
        if name in columns:
            raise InvalidInput(f"{where(name)} is given twice", field=name)
        if "shared_memory_region" in tensor.parameters:
            raise InvalidInput(f"{where(name)}: shared memory is not supported; send the data", field=name)
        datatype = check_datatype(name, tensor.datatype)
        n = rows_of(name, list(tensor.shape), max_rows)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"{where(name)} has contents, but the request sends raw contents", field=name
                )
            columns[name] = from_raw(name, datatype, n, raw[i])
        else:
            columns[name] = _typed_values(name, datatype, n, tensor)
        datatypes[name], rows[name] = datatype, n
    return InferCall(
        columns,
        datatypes,
        combine_columns(columns, rows),
        request.id or None,
        _requested_outputs(request.outputs),
        binary_outputs=True,
    )


def _typed_values(name: str, datatype: str, n: int, tensor: Any) -> list[Any]:
    """The ``n`` values of a tensor sent as typed contents, from the one field its datatype names."""
    kind = _CONTENTS.get(datatype)
    if kind is None:
        raise InvalidInput(f"{where(name)}: {datatype} has no typed contents; send it raw", field=name)
    # Values in another field would be silently dropped: the client meant something else.
    other = next((f.name for f, _ in tensor.contents.ListFields() if f.name != kind), None)
    if other is not None:
        raise InvalidInput(
            f"{where(name)}: {datatype} values go in {kind}, but the tensor has {other}", field=name
        )
    values = list(getattr(tensor.contents, kind))
    if len(values) != n:
        raise InvalidInput(f"{where(name)}: {len(values)} values for shape {list(tensor.shape)}", field=name)
    return check_values(name, datatype, values, nulls=False)


def _requested_outputs(requested: Any) -> list[RequestedOutput] | None:
    """The outputs a request names (None: every output), each with its top-K classification count."""
    if not requested:
        return None
    outputs = []
    for out in requested:
        owner = f"output {out.name[:100]!r}"
        if "shared_memory_region" in out.parameters:
            raise InvalidInput(f"{owner}: shared memory is not supported", field="outputs")
        top = 0
        if "classification" in out.parameters:
            parameter = out.parameters["classification"]
            if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
                raise InvalidInput(
                    f"{owner}: classification must be a count of classes (int64_param)", field="outputs"
                )
            top = parameter.int64_param or parameter.uint64_param
            if top < 0:
                raise InvalidInput(f"{owner}: classification must be a count of classes", field="outputs")
        outputs.append(RequestedOutput(out.name, True, top))
    return check_outputs(outputs)


def infer_response(result: InferResult) -> Any:
    response = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.id or ""
    )
    for out in result.outputs:
        tensor = response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        for key, value in out.parameters.items():
            tensor.parameters[key].string_param = orjson.dumps(value).decode()
        response.raw_output_contents.append(out.to_bytes())
    return response


# --- the server -------------------------------------------------------------------------------


class GrpcEndpoint:
    """A running gRPC server of one worker; ``stop()`` lets calls in progress finish (``GRACE_S``)."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.address = f"{_host(settings.host)}:{settings.grpc_port}"
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="assay-grpc-score")
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="assay-grpc"),
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                # Several workers share the port (the kernel spreads connections); one binds it alone.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_total,
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(services, self.executor), self.server
        )
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {self.address}: {exc}") from None
        self.server.start()
        log.info("serving the Open Inference Protocol over gRPC on %s", self.address)

    def stop(self) -> None:
        self.server.stop(GRACE_S).wait()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def start(services: Services) -> GrpcEndpoint:
    return GrpcEndpoint(services)
