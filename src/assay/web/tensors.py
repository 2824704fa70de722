"""Tensors of the Open Inference Protocol: datatypes, decoding inputs, encoding outputs.

Both transports of the protocol (HTTP ``/v2`` in ``web.oip``, gRPC in
``web.oip_grpc``) hand their input tensors here and get back one column of
values per tensor, as the scorer's columns take them: a numpy array for a raw
fixed-size tensor, else a list of plain values (``float``/``int``/``bool``/
``str``, or ``None`` for JSON's null). A tensor
arrives either as values (JSON ``data``, gRPC typed ``contents``) or as raw
bytes (the binary tensor extension over HTTP, gRPC ``raw_input_contents``):
row-major, little-endian, no padding; a ``BYTES`` element is a 4-byte length
and that many bytes.

Nothing is guessed from bytes that do not fit: a raw tensor must be exactly
shape x element size long, ``BOOL`` bytes must be 0 or 1, ``BYTES`` elements
must be UTF-8 and fill the tensor exactly, floats must be finite, integers must
fit their type. Every refusal is a 4xx ``AssayError`` whose message names the
tensor (the protocol's error body carries only a message).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import InvalidInput, PayloadTooLarge

# The fixed-size datatypes, as numpy reads them (explicitly little-endian: the protocol's byte order).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NUMERIC = frozenset(DTYPES)  # every fixed-size type; BOOL included, as the protocol lists it
DATATYPES = frozenset({*DTYPES, "BYTES"})
FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
# Datatypes of the protocol (or of Triton) that assay does not take, with what to send instead.
UNSUPPORTED = {"BF16": "send FP32 or FP64"}
_RANGES = {name: (int(np.iinfo(DTYPES[name]).min), int(np.iinfo(DTYPES[name]).max)) for name in INTEGERS}
_LENGTH = struct.Struct("<I")
_NONE = type(None)


def where(name: str) -> str:
    """How messages name a tensor."""
    return f"input {name[:100]!r}"


def check_datatype(name: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        hint = UNSUPPORTED.get(datatype) if isinstance(datatype, str) else None
        if hint:
            raise InvalidInput(f"{where(name)}: datatype {datatype} is not supported; {hint}", field=name)
        raise InvalidInput(
            f"{where(name)}: {str(datatype)[:40]!r} is not an Open Inference Protocol datatype "
            f"(one of {', '.join(sorted(DATATYPES))})",
            field=name,
        )
    return datatype


def rows_of(name: str, shape: Any, limit: int) -> int:
    """The rows of a feature tensor: its shape must be ``[n]`` or ``[n, 1]``; ``n`` at most ``limit`` (413)."""
    if (
        type(shape) is not list
        or not 1 <= len(shape) <= 2
        or not all(type(s) is int and s >= 0 for s in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise InvalidInput(
            f"{where(name)}: shape must be [n] or [n, 1] (one value per row); got {str(shape)[:40]}",
            field=name,
        )
    n = int(shape[0])
    if n > limit:
        raise PayloadTooLarge(
            f"{where(name)}: {n} rows is more than the {limit} this server takes per request; split the request",
            field=name,
            code="too_many_items",
        )
    return n


# --- raw bytes ------------------------------------------------------------------------


def from_raw(name: str, datatype: str, n: int, raw: bytes | memoryview) -> list[str] | np.ndarray:
    """The ``n`` values of a raw tensor (a numpy array; text for BYTES); exactly ``n`` elements'
    worth of bytes, all of them valid."""
    if datatype == "BYTES":
        return [_utf8(name, k, b) for k, b in enumerate(split_bytes(name, n, raw))]
    dtype = DTYPES[datatype]
    expected = n * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{where(name)}: {len(raw)} bytes of data, but shape [{n}] of {datatype} "
            f"({dtype.itemsize} byte{'s' if dtype.itemsize > 1 else ''} each) is {expected}",
            field=name,
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if n and octets.max() > 1:
            k = int(np.argmax(octets > 1))
            raise InvalidInput(
                f"{where(name)}: element {k} is byte {octets[k]}; BOOL elements are 0 or 1", field=name
            )
        return octets.view(np.bool_)
    values = np.frombuffer(raw, dtype=dtype)
    if datatype in FLOATS and n:
        finite = np.isfinite(values)
        if not finite.all():
            k = int(np.argmin(finite))
            raise InvalidInput(
                f"{where(name)}: element {k} is {values[k].item()}; values must be finite", field=name
            )
    return values


def split_bytes(name: str, n: int, raw: bytes | memoryview) -> list[bytes]:
    """The ``n`` elements of a raw BYTES tensor (each a 4-byte little-endian length, then the bytes)."""
    view = memoryview(raw)
    out: list[bytes] = []
    offset, end = 0, len(view)
    for k in range(n):
        if offset + 4 > end:
            raise InvalidInput(
                f"{where(name)}: BYTES data ends inside the length of element {k} of {n}", field=name
            )
        (size,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if size > end - offset:
            raise InvalidInput(
                f"{where(name)}: BYTES element {k} says {size} bytes but {end - offset} are left", field=name
            )
        out.append(bytes(view[offset : offset + size]))
        offset += size
    if offset != end:
        raise InvalidInput(
            f"{where(name)}: {end - offset} bytes left after the {n} BYTES elements of shape [{n}]",
            field=name,
        )
    return out


def _utf8(name: str, k: int, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{where(name)}: BYTES element {k} is not UTF-8 text", field=name) from None


# --- values (JSON data, gRPC typed contents) --------------------------------------------


def flat_values(name: str, data: Any, shape: Sequence[int]) -> list[Any]:
    """JSON ``data`` flattened for shape ``[n]`` or ``[n, 1]`` (nested ``[[v], [v]]`` or flat)."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where(name)}: data must be a list", field=name)
    if len(shape) == 2 and any(type(v) is list for v in data):
        if not all(type(v) is list and len(v) == 1 for v in data):
            raise InvalidInput(
                f"{where(name)}: data for shape {list(shape)} must be [[v], ...] or [v, ...]", field=name
            )
        data = [v[0] for v in data]
    if len(data) != shape[0]:
        raise InvalidInput(f"{where(name)}: {len(data)} values for shape {list(shape)}", field=name)
    return data


def check_values(name: str, datatype: str, values: list[Any], *, nulls: bool) -> list[Any]:
    """``values`` checked against ``datatype`` (types, integer ranges, finite floats); BYTES as text.

    ``nulls``: JSON's null stands for a missing value (the scorer takes it where the model does).
    """
    if not values:
        return values
    kinds = set(map(type, values))
    if nulls:
        kinds.discard(_NONE)
    present = [v for v in values if v is not None] if nulls and _NONE in set(map(type, values)) else values
    if datatype == "BOOL":
        if not kinds <= {bool}:
            raise InvalidInput(
                f"{where(name)}: BOOL data must be true or false; got {_odd(values, {bool})}", field=name
            )
    elif datatype in INTEGERS:
        if not kinds <= {int}:
            raise InvalidInput(
                f"{where(name)}: {datatype} data must be integers; got {_odd(values, {int})}", field=name
            )
        if present:
            low, high = _RANGES[datatype]
            if min(present) < low or max(present) > high:
                bad = next(v for v in present if not low <= v <= high)
                raise InvalidInput(f"{where(name)}: {bad} does not fit in {datatype}", field=name)
    elif datatype in FLOATS:
        if not kinds <= {int, float}:
            raise InvalidInput(
                f"{where(name)}: {datatype} data must be numbers; got {_odd(values, {int, float})}",
                field=name,
            )
        if float in kinds:
            column = np.asarray(present, dtype=np.float64)
            if not np.isfinite(column).all():
                k = int(np.argmin(np.isfinite(column)))
                raise InvalidInput(
                    f"{where(name)}: {present[k]} is not finite; values must be finite", field=name
                )
    elif kinds <= {str}:  # BYTES as JSON text
        pass
    elif kinds <= {bytes, str}:  # BYTES as gRPC bytes_contents
        return [v if type(v) is not bytes else _utf8(name, k, v) for k, v in enumerate(values)]
    else:
        raise InvalidInput(
            f"{where(name)}: BYTES data must be strings; got {_odd(values, {str, bytes})}", field=name
        )
    return values


def _odd(values: list[Any], allowed: set[type]) -> str:
    """The first value of a type outside ``allowed``, for a message."""
    bad = next(v for v in values if type(v) not in allowed and v is not None)
    return (
        f"{type(bad).__name__} {str(bad)[:40]!r}" if not isinstance(bad, list | dict) else type(bad).__name__
    )


# --- outputs --------------------------------------------------------------------------


@dataclass
class OutputTensor:
    """An output of an inference: values, and whether the client asked for them as raw bytes."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray[Any, Any] | list[str]  # a numeric array, or text for BYTES
    parameters: dict[str, Any]
    binary: bool = False

    def to_bytes(self) -> bytes:
        if self.datatype == "BYTES":
            encoded = [str(v).encode("utf-8") for v in self.values]
            return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
        return np.ascontiguousarray(self.values, dtype=DTYPES[self.datatype]).tobytes()

    def to_list(self) -> list[Any]:
        if isinstance(self.values, np.ndarray):
            return self.values.ravel().tolist()
        return list(self.values)
