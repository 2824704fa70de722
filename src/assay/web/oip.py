"""The Open Inference Protocol (v2): what a request means, the inference both transports share, and HTTP bodies.

The protocol's model is a function of named tensors: assay's model takes one
input tensor per feature (shape ``[n]`` or ``[n, 1]``, a row per item) and
gives two outputs, ``probability`` (FP64 ``[n, k]``, classes in the order of
its ``classes`` parameter) and ``prediction`` (BOOL for binary models, BYTES
with the class name otherwise). Numeric features take any integer or float
datatype, boolean ones BOOL (or integers 0/1), categorical ones BYTES (UTF-8).

HTTP speaks JSON, or the binary tensor extension that Triton and KServe
clients use by default: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every
input whose ``parameters.binary_data_size`` says how many; outputs come back
the same way when the request asks (``binary_data`` on an output, or
``binary_data_output`` for all), and ``classification: K`` on ``probability``
answers the top K classes as ``"probability:index:class"`` strings (the
classification extension). A gzip or deflate ``Content-Encoding`` is
inflated, up to the body limit.

``parse_infer`` (HTTP) and ``web.oip_grpc`` (gRPC) turn a request into an
``InferCall``; ``infer`` scores its columns through ``Scorer.score_columns`` — the
same scorer, checks and limits as ``/v1`` — and gives ``OutputTensor``s each
transport writes out. Errors on ``/v2`` have the protocol's shape,
``{"error": "message"}`` (``web.errors``), so every message names the input
at fault.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay import __version__
from assay.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from assay.serving.scoring import Scorer
from assay.serving.served import ServedModel
from assay.web.api import parse_json
from assay.web.tensors import (
    FLOATS,
    INTEGERS,
    NUMERIC,
    OutputTensor,
    check_datatype,
    check_values,
    flat_values,
    from_raw,
    rows_of,
    where,
)

EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUTS = ("probability", "prediction")
# A version mitigated with per-group thresholds also answers the threshold each row was decided at.
GROUP_OUTPUT = "threshold"
# What the model metadata declares per feature kind, and what each kind accepts.
_DECLARED = {"numeric": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
_ACCEPTED = {
    "numeric": FLOATS | INTEGERS,
    "boolean": INTEGERS | {"BOOL"},
    "categorical": frozenset({"BYTES"}),
}
# model_name and model_version: KServe's client repeats the model in the body (checked against the path).
_REQUEST_KEYS = frozenset({"id", "model_name", "model_version", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
HEADER_LENGTH = "inference-header-content-length"
BINARY_TYPE = "application/octet-stream"
OIP_NUMERIC = NUMERIC  # the fixed-size datatypes (the OpenAPI document lists them)


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False
    classification: int = 0  # top-K classes as strings (the classification extension); 0: the tensor


@dataclass
class InferCall:
    """An inference request, transport aside: one column of checked values per input tensor
    (a numpy array for raw fixed-size tensors, a list otherwise)."""

    columns: dict[str, list[Any] | np.ndarray]
    datatypes: dict[str, str]
    rows: int
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_outputs: bool = False  # the default of outputs not named (``binary_data_output``)


@dataclass
class InferResult:
    model_name: str
    model_version: str
    outputs: list[OutputTensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def model_ref(name: str, version: str | None) -> str:
    """The scorer's reference for a protocol model name and optional version (a number or an alias)."""
    return f"{name}@{version}" if version else name


# --- metadata ---------------------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    return {"name": "assay", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(scorer: Scorer, ref: str) -> dict[str, Any]:
    served = scorer.model(ref)
    versions = scorer.info(served.name).versions
    return {
        "name": served.name,
        "versions": [str(v) for v in versions],
        "platform": served.loaded.predictor.kind,
        "inputs": [
            {"name": f.name, "datatype": _DECLARED[f.kind], "shape": [-1]}
            for f in served.loaded.schema.features
        ]
        + _group_input(served),
        "outputs": [
            {"name": "probability", "datatype": "FP64", "shape": [-1, len(served.keys)]},
            {"name": "prediction", "datatype": _prediction_type(served), "shape": [-1]},
        ]
        + ([{"name": GROUP_OUTPUT, "datatype": "FP64", "shape": [-1]}] if served.groups else []),
    }


def _group_input(served: ServedModel) -> list[dict[str, Any]]:
    """The input that declares the group of a per-group threshold that is no feature (optional: a
    request without it is decided at the version's fallback threshold)."""
    decision = served.groups
    if decision is None or decision.feature is not None:
        return []
    return [{"name": decision.attribute, "datatype": "BYTES", "shape": [-1]}]


def _prediction_type(served: ServedModel) -> str:
    return "BOOL" if served.positive_index is not None else "BYTES"


# --- inference ------------------------------------------------------------------------------


def infer(scorer: Scorer, ref: str, call: InferCall) -> InferResult:
    """Score ``call`` with the model ``ref`` names; the outputs it asked for, in the order it asked."""
    served = scorer.model(ref)
    context = _context(served, call)
    _check_inputs(served, call)
    try:
        served, proba, groups = scorer.score_columns(ref, call.columns, call.rows, context=context)
    except InvalidInput as exc:
        raise _named(exc) from None
    names = (*OUTPUTS, GROUP_OUTPUT) if served.groups is not None else OUTPUTS
    wanted = (
        call.outputs if call.outputs is not None else [RequestedOutput(n, call.binary_outputs) for n in names]
    )
    if any(out.name not in names for out in wanted):
        raise InvalidInput(
            f"output {GROUP_OUTPUT!r} is answered by versions with per-group thresholds only", field="outputs"
        )
    outputs = [_output(served, proba, out, groups) for out in wanted]
    return InferResult(served.name, served.version_label, outputs, call.id)


def _context(served: ServedModel, call: InferCall) -> dict[str, list[Any]] | None:
    """The input that declares a per-group threshold's group when that attribute is no feature
    (an input of the attribute's name, e.g. BYTES ``sex``), taken out of the feature inputs."""
    decision = served.groups
    if decision is None or decision.feature is not None or decision.attribute not in call.columns:
        return None
    values = call.columns.pop(decision.attribute)
    return {decision.attribute: values.tolist() if isinstance(values, np.ndarray) else list(values)}


def _check_inputs(served: ServedModel, call: InferCall) -> None:
    """One input per feature, each of a datatype its feature takes."""
    unknown = [name for name in call.columns if name not in served.name_set]
    if unknown:
        raise InvalidInput(
            f"{where(unknown[0])} is not a feature of model {served.name!r}; it takes one input per feature: "
            f"{', '.join(served.names)}",
            field=unknown[0],
            code="unknown_feature",
        )
    missing = [name for name in served.names if name not in call.columns]
    if missing:
        raise InvalidInput(
            f"{where(missing[0])} is missing; model {served.name!r} takes one input per feature: "
            f"{', '.join(served.names)}",
            field=missing[0],
            code="missing_feature",
        )
    for feature in served.loaded.schema.features:
        datatype = call.datatypes[feature.name]
        if datatype not in _ACCEPTED[feature.kind]:
            wanted = {"numeric": "an integer or float datatype", "boolean": "BOOL", "categorical": "BYTES"}
            raise InvalidInput(
                f"{where(feature.name)} is a {feature.kind} feature: send {wanted[feature.kind]}, not {datatype}",
                field=feature.name,
            )


def _named(exc: InvalidInput) -> InvalidInput:
    """A scorer error about ``features.x`` (or ``context.x``) as one about input ``x`` (the protocol's
    error is a message)."""
    if exc.field and exc.field.startswith(("features.", "context.")):
        name = exc.field.partition(".")[2]
        return InvalidInput(f"{where(name)}: {exc.message}", field=name, code=exc.code)
    return exc


def _output(
    served: ServedModel, proba: np.ndarray, wanted: RequestedOutput, groups: list[str | None]
) -> OutputTensor:
    n = len(proba)
    classes = [served.keys[j] for j in served.order]
    if wanted.name == "probability":
        ordered = proba[:, served.order]
        if wanted.classification:
            top = min(wanted.classification, len(classes))
            ranks = np.argsort(-ordered, axis=1, kind="stable")[:, :top]
            labels = [f"{ordered[r, j]:f}:{j}:{classes[j]}" for r in range(n) for j in ranks[r].tolist()]
            return OutputTensor("probability", "BYTES", [n, top], labels, {"classes": classes}, wanted.binary)
        return OutputTensor(
            "probability", "FP64", [n, len(classes)], ordered, {"classes": classes}, wanted.binary
        )
    if wanted.name == GROUP_OUTPUT and served.groups is not None:
        limits = served.groups.limits(groups)
        return OutputTensor(
            GROUP_OUTPUT, "FP64", [n], limits, {"attribute": served.groups.attribute}, wanted.binary
        )
    predictions = served.predictions(proba, groups)
    if served.positive_index is not None:
        return OutputTensor("prediction", "BOOL", [n], np.asarray(predictions, dtype=bool), {}, wanted.binary)
    return OutputTensor("prediction", "BYTES", [n], [str(p) for p in predictions.tolist()], {}, wanted.binary)


def check_outputs(requested: list[RequestedOutput]) -> list[RequestedOutput]:
    seen: set[str] = set()
    for out in requested:
        if out.name not in (*OUTPUTS, GROUP_OUTPUT):
            raise InvalidInput(
                f"output {out.name[:100]!r} is not an output of assay's models ({', '.join(OUTPUTS)}, and "
                f"{GROUP_OUTPUT} for a version with per-group thresholds)",
                field="outputs",
            )
        if out.name in seen:
            raise InvalidInput(f"output {out.name!r} is requested twice", field="outputs")
        if out.classification and out.name != "probability":
            raise InvalidInput("classification applies to the probability output only", field="outputs")
        seen.add(out.name)
    return requested


def combine_columns(columns: Mapping[str, Any], rows: dict[str, int]) -> int:
    """The row count every input agrees on."""
    counts = set(rows.values())
    if len(counts) > 1:
        first = next(iter(rows))
        other = next(name for name, n in rows.items() if n != rows[first])
        raise InvalidInput(
            f"{where(other)} has {rows[other]} rows but {where(first)} has {rows[first]}; "
            "every input holds one value per row",
            field=other,
        )
    return counts.pop() if counts else 0


# --- HTTP: parsing ------------------------------------------------------------------------


def parse_infer(
    body: bytes, header_length: str | None, *, max_rows: int, route: tuple[str, str | None] | None = None
) -> InferCall:
    """An HTTP infer request: a JSON body, or a JSON header then the inputs' raw bytes.

    ``route`` is the (model, version) the path names: a ``model_name`` or ``model_version`` in
    the body (KServe's client sends ``model_name``) must agree with it.
    """
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        size = _header_size(header_length, len(body))
        header, binary = body[:size], memoryview(body)[size:]
    payload = parse_json(header, "the inference request")
    if not isinstance(payload, dict):
        raise InvalidInput("the inference request must be a JSON object", field="body")
    unknown = sorted(k for k in payload if k not in _REQUEST_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0][:100]!r} in the inference request; allowed: "
            f"{', '.join(sorted(_REQUEST_KEYS))}",
            field=unknown[0],
        )
    _check_route(payload, route)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string", field="id")
    parameters = _parameters(payload.get("parameters"), "the request's parameters")
    binary_outputs = _flag(parameters, "binary_data_output", "the request's parameters")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors, one per feature", field="inputs")
    columns: dict[str, list[Any] | np.ndarray] = {}
    datatypes: dict[str, str] = {}
    rows: dict[str, int] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        name, datatype, n = _tensor_header(i, tensor, columns, max_rows)
        nbytes = _binary_size(name, tensor, header_length is not None, len(binary) - offset)
        if nbytes is not None:
            columns[name] = from_raw(name, datatype, n, binary[offset : offset + nbytes])
            offset += nbytes
        elif "data" in tensor:
            values = flat_values(name, tensor["data"], tensor["shape"])
            columns[name] = check_values(name, datatype, values, nulls=True)
        else:
            raise InvalidInput(f"{where(name)} has no data and no binary_data_size", field=name)
        datatypes[name], rows[name] = datatype, n
    if offset != len(binary):
        raise MalformedRequest(
            f"{len(binary) - offset} bytes after the inputs' binary data (their binary_data_size add up to "
            f"{offset})",
            field="body",
        )
    outputs = payload.get("outputs")
    requested = None if outputs is None else _requested_outputs(outputs, binary_outputs)
    return InferCall(
        columns, datatypes, combine_columns(columns, rows), request_id, requested, binary_outputs
    )


def _check_route(payload: Mapping[str, Any], route: tuple[str, str | None] | None) -> None:
    """``model_name``/``model_version`` in the body, when given, name what the path names."""
    for key, expected in zip(("model_name", "model_version"), route or (None, None), strict=True):
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"{key} must be a string", field=key)
        if route is not None and value != (expected or value):
            raise InvalidInput(
                f"{key} {value[:100]!r} in the body disagrees with {expected!r} in the path", field=key
            )


def _tensor_header(i: int, tensor: Any, seen: Mapping[str, Any], max_rows: int) -> tuple[str, str, int]:
    """An input tensor's name, datatype and rows, checked."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or not tensor["name"]:
        raise InvalidInput(
            f"inputs[{i}] must be an object with a name, shape, datatype and data", field="inputs"
        )
    name = tensor["name"]
    if name in seen:
        raise InvalidInput(f"{where(name)} is given twice", field=name)
    extra = sorted(k for k in tensor if k not in _INPUT_KEYS)
    if extra:
        raise InvalidInput(f"{where(name)}: unknown field {extra[0][:100]!r}", field=name)
    return name, check_datatype(name, tensor.get("datatype")), rows_of(name, tensor.get("shape"), max_rows)


def _binary_size(name: str, tensor: dict[str, Any], framed: bool, left: int) -> int | None:
    """The byte count of an input sent as binary data (None when it is sent as ``data``)."""
    nbytes = _parameters(tensor.get("parameters"), where(name)).get("binary_data_size")
    if nbytes is None:
        return None
    if type(nbytes) is not int or nbytes < 0:
        raise InvalidInput(f"{where(name)}: binary_data_size must be a byte count", field=name)
    if "data" in tensor:
        raise InvalidInput(f"{where(name)} has both data and binary_data_size", field=name)
    if not framed:
        raise MalformedRequest(
            f"{where(name)} has binary data but the request has no Inference-Header-Content-Length",
            field=name,
        )
    if nbytes > left:
        raise MalformedRequest(
            f"{where(name)}: binary_data_size {nbytes} goes past the end of the body ({left} bytes left)",
            field=name,
        )
    return nbytes


def _header_size(raw: str, body: int) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise MalformedRequest(
            f"Inference-Header-Content-Length must be a byte count; got {raw[:40]!r}", field="headers"
        )
    size = int(raw)
    if size > body:
        raise MalformedRequest(
            f"Inference-Header-Content-Length is {size} but the body has {body} bytes", field="headers"
        )
    return size


def _parameters(value: Any, owner: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{owner}: parameters must be an object", field="parameters")
    if "shared_memory_region" in value:
        raise InvalidInput(f"{owner}: shared memory is not supported; send the data", field="parameters")
    return value


def _flag(parameters: Mapping[str, Any], name: str, owner: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{owner}: {name} must be true or false", field=name)
    return value


def _requested_outputs(outputs: Any, binary_default: bool) -> list[RequestedOutput]:
    if not isinstance(outputs, list):
        raise InvalidInput("outputs must be a list of {name, parameters}", field="outputs")
    requested = []
    for i, out in enumerate(outputs):
        if (
            not isinstance(out, dict)
            or not isinstance(out.get("name"), str)
            or not out.keys() <= _OUTPUT_KEYS
        ):
            raise InvalidInput(f"outputs[{i}] must be an object with a name and parameters", field="outputs")
        owner = f"output {out['name'][:100]!r}"
        params = _parameters(out.get("parameters"), owner)
        binary = _flag(params, "binary_data", owner) if "binary_data" in params else binary_default
        top = params.get("classification", 0)
        if type(top) is not int or top < 0:
            raise InvalidInput(f"{owner}: classification must be a count of classes", field="outputs")
        requested.append(RequestedOutput(out["name"], binary, top))
    return check_outputs(requested)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) request body, inflated to at most ``limit`` bytes (413 above)."""
    kind = encoding.strip().lower()
    if kind in ("", "identity"):
        return body
    if kind not in ("gzip", "deflate"):
        raise MalformedRequest(
            f"Content-Encoding {encoding[:40]!r} is not supported (gzip, deflate or none)", field="headers"
        )
    inflater = zlib.decompressobj(wbits=31 if kind == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"the {kind} body cannot be inflated: {exc}", field="body") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the inflated request body is larger than {limit} bytes", field="body")
    if not inflater.eof:
        raise MalformedRequest(f"the {kind} body is truncated", field="body")
    return out
