"""The Open Inference Protocol's part of the OpenAPI document (``web.openapi`` assembles it).

The ``/v2`` routes of ``web.oip``: server and model metadata, liveness and readiness, and
inference as JSON or with the binary tensor extension; every error in the protocol's shape.
"""

from __future__ import annotations

from typing import Any

from assay.web.oip import OIP_NUMERIC
from assay.web.openapi_schema import NAME, json_content, path_param, ref

_OIP_NAME = path_param("model", "A model name.", NAME)
_OIP_VERSION = path_param("version", "A version number (or alias).")


def oip_schemas() -> dict[str, Any]:
    """The schemas the ``/v2`` operations refer to."""
    return {
        "OipError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What is wrong, naming the input at fault."}
            },
            "additionalProperties": False,
            "description": "The Open Inference Protocol's error shape, which every /v2 error takes.",
        },
        "Tensor": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "shape": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2,
                    "items": {"type": "integer", "minimum": 0},
                },
                "datatype": {"type": "string", "enum": [*sorted(OIP_NUMERIC), "BYTES"]},
                "data": {"type": "array"},
                "parameters": {"type": "object"},
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "model_name": {"type": "string", "description": "If given, the model the path names."},
                "model_version": {"type": "string", "description": "If given, the version the path names."},
                "inputs": {
                    "type": "array",
                    "items": ref("Tensor"),
                    "description": "One tensor per feature.",
                },
                "outputs": {"type": "array"},
                "parameters": {"type": "object"},
            },
            "additionalProperties": False,
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": ref("Tensor")},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"type": "object"}},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


_OIP_ERROR = {"default": json_content(ref("OipError"), "An error, in the protocol's shape")}
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Binary tensor extension: the length of the JSON header that starts the body; "
    "the inputs' raw bytes follow it.",
}


def oip_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v2": {
            "get": {
                "summary": "OIP server metadata",
                "operationId": "oip_server",
                "responses": {
                    "200": json_content({"type": "object", "required": ["name", "version", "extensions"]})
                },
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "OIP liveness",
                "operationId": "oip_live",
                "responses": {
                    "200": json_content(
                        {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
                    )
                },
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "OIP readiness",
                "operationId": "oip_ready",
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "required": ["ready"],
                            "properties": {"ready": {"type": "boolean"}},
                        }
                    )
                },
            }
        },
    }
    ready = {"type": "object", "required": ["name", "ready"], "properties": {"ready": {"type": "boolean"}}}
    for prefix, params, suffix in (
        ("/v2/models/{model}", [_OIP_NAME], ""),
        ("/v2/models/{model}/versions/{version}", [_OIP_NAME, _OIP_VERSION], "_version"),
    ):
        paths[prefix] = {
            "get": {
                "summary": "OIP model metadata",
                "operationId": f"oip_model{suffix}",
                "parameters": params,
                "responses": {"200": json_content(ref("ModelMetadata")), **_OIP_ERROR},
            }
        }
        paths[f"{prefix}/ready"] = {
            "get": {
                "summary": "OIP model readiness",
                "operationId": f"oip_model_ready{suffix}",
                "parameters": params,
                "responses": {"200": json_content(ready), **_OIP_ERROR},
            }
        }
        paths[f"{prefix}/infer"] = {
            "post": {
                "summary": "OIP inference: one input tensor per feature, shape [n] or [n, 1]",
                "description": "JSON, or the binary tensor extension: a JSON header of "
                "Inference-Header-Content-Length bytes, then the raw bytes of each input whose "
                "parameters.binary_data_size gives their length. Outputs asked for as binary_data "
                "(or all, with binary_data_output) come back the same way.",
                "operationId": f"oip_infer{suffix}",
                "parameters": [*params, _HEADER_LENGTH],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("InferRequest")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {"schema": ref("InferResponse")},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **_OIP_ERROR,
                },
            }
        }
    return paths
