"""Regenerate the modules beside ``grpc_service.proto``: ``python -m assay.web.oip_proto.generate [OUT]``.

Runs grpcio-tools' protoc, then gives the messages a private descriptor pool.
protoc's Python modules register their messages in protobuf's process-wide
default pool, where a second definition of ``inference.ModelInferRequest`` from
another file is an error: Triton's client library registers its own, so a
process holding both (a test, a benchmark, an application that calls Triton
and assay) could not import the second. In a pool of their own the messages
serialise to the same bytes on the wire and never collide.

``OUT`` (default: ``src``) is the root the ``assay/web/oip_proto/`` files are
written under; the tests write to a temporary folder and compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = "assay/web/oip_proto/grpc_service.proto"
SRC = Path(__file__).resolve().parents[3]
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# A pool of its own, not the process-wide default one (see assay/web/oip_proto/generate.py).\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out``; returns their paths."""
    from grpc_tools import protoc  # dev dependency: only regenerating needs it

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{SRC}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(SRC / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    folder = out / Path(PROTO).parent
    messages = folder / "grpc_service_pb2.py"
    text = messages.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{messages}: protoc's output changed shape; update generate.py")
    messages.write_text(text.replace(_DEFAULT_POOL, _PRIVATE_POOL))
    return [
        folder / name for name in ("grpc_service_pb2.py", "grpc_service_pb2.pyi", "grpc_service_pb2_grpc.py")
    ]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC):
        print(path)
