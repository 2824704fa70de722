"""The OpenAPI document of the JSON API (``/openapi.json``) and a plain docs page (``/docs``).

Written by hand next to the handlers in ``api.py`` and checked against them by
schemathesis in the test suite (tests/test_openapi_fuzz.py): every response
the server gives must match this document, and no request may get a 5xx.
"""

from __future__ import annotations

import html
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from assay import __version__
from assay.scoring import MAX_EXPLAIN
from assay.web.api import OIP_NUMERIC


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = {"default": _json(_ref("Error"), "An error, in the one error shape of the API")}
_SCALAR = {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}], "nullable": True}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


# What ``registry.parse_ref`` takes: a safe name, optionally @version or @alias.
_REF = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}(@.*)?$"}
_MODEL = {
    **_path_param("model", "A model: `name` (its production alias), `name@3` or `name@alias`."),
    "schema": _REF,
}
_OIP_NAME = {
    **_path_param("model", "A model name."),
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$"},
}
_OIP_VERSION = _path_param("version", "A version number (or alias).")


def _schemas() -> dict[str, Any]:
    explanation = {
        "type": "object",
        "properties": {
            "class": {"type": "string"},
            "method": {"type": "string", "enum": ["exact", "occlusion"]},
            "base": {"type": "number"},
            "contributions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["feature", "contribution"],
                    "properties": {
                        "feature": {"type": "string"},
                        "contribution": {"type": "number"},
                        "value": _SCALAR,
                    },
                },
            },
        },
    }
    return {
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Machine-readable, e.g. unknown_model, invalid_input.",
                },
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The field at fault, e.g. items[2].id."},
            },
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail")},
            "additionalProperties": False,
        },
        "Item": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "integer"}]},
                "features": {
                    "type": "object",
                    "additionalProperties": _SCALAR,
                    "description": "Feature values; they override the stored features of the item.",
                },
            },
            "additionalProperties": False,
        },
        "ScoreRequest": {
            "type": "object",
            "required": ["models", "items"],
            "properties": {
                "models": {"type": "array", "minItems": 1, "items": _REF},
                "items": {"type": "array", "items": _ref("Item")},
                "features": {"type": "boolean", "description": "Return the feature values used."},
                "explain": {
                    "oneOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": MAX_EXPLAIN}],
                    "description": "Return the top contributions (true: 5).",
                },
            },
            "additionalProperties": False,
        },
        "Score": {
            "type": "object",
            "required": ["version", "prediction", "probability"],
            "properties": {
                "version": {"type": "string"},
                "prediction": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
                "probability": {"type": "object", "additionalProperties": {"type": "number"}},
                "operating_points": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "features": {"type": "object", "additionalProperties": _SCALAR},
                "explanation": explanation,
            },
            "additionalProperties": False,
        },
        "ItemError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail")},
            "additionalProperties": False,
        },
        "ScoreResponse": {
            "type": "object",
            "required": ["scores"],
            "properties": {
                "scores": {
                    "type": "object",
                    "description": "item id -> model -> score or the item's error",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"oneOf": [_ref("Score"), _ref("ItemError")]},
                    },
                }
            },
        },
        "ModelSummary": {
            "type": "object",
            "required": ["name", "task", "versions", "aliases"],
            "properties": {
                "name": {"type": "string"},
                "task": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "integer"}},
                "aliases": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["models"],
            "properties": {"models": {"type": "array", "items": _ref("ModelSummary")}},
        },
        "ModelDetail": {
            "type": "object",
            "required": ["name", "version", "classes", "features", "statistics", "operating_points"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "task": {"type": "string"},
                "aliases": {"type": "object", "additionalProperties": {"type": "integer"}},
                "versions": {"type": "array", "items": {"type": "integer"}},
                "classes": {"type": "array", "items": {"type": "string"}},
                "positive": {"type": "string", "nullable": True},
                "decision_threshold": {"type": "number"},
                "features": {"type": "array", "items": {"type": "object"}},
                "operating_points": {"type": "object"},
                "statistics": {"type": "object"},
                "thresholds": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "query": {"type": "string"},
                            "class": {"type": "string"},
                            "answer": {"type": "object", "nullable": True},
                        },
                    },
                },
            },
        },
        "PrecacheRequest": {
            "type": "object",
            "required": ["models", "ids"],
            "properties": {
                "models": {"type": "array", "minItems": 1, "items": _REF},
                "ids": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
            },
            "additionalProperties": False,
        },
        "PrecacheResponse": {
            "type": "object",
            "required": ["scored", "cached", "failed"],
            "properties": {
                "scored": {"type": "integer"},
                "cached": {"type": "integer"},
                "failed": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "FeatureRows": {
            "type": "object",
            "required": ["rows"],
            "properties": {
                "rows": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "features"],
                        "properties": {
                            "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                            "features": {"type": "object", "additionalProperties": _SCALAR},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
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
                "inputs": {
                    "type": "array",
                    "items": _ref("Tensor"),
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
                "outputs": {"type": "array", "items": _ref("Tensor")},
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


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the API."""
    token = [{"bearer": []}]
    flag = {"type": "string", "enum": ["true", "false"]}
    paths: dict[str, Any] = {
        "/v1/scores": {
            "post": {
                "summary": "Score items with one or more models",
                "operationId": "score",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ScoreRequest")}},
                },
                "responses": {"200": _json(_ref("ScoreResponse")), **_ERROR},
            }
        },
        "/v1/scores/{model}/{item_id}": {
            "get": {
                "summary": "Score one stored item",
                "operationId": "score_one",
                "parameters": [
                    _MODEL,
                    _path_param("item_id", "The item's id in the model's feature table."),
                    {"name": "features", "in": "query", "schema": flag},
                    {
                        "name": "explain",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^(true|false|[0-9]+)$"},
                        "description": f"true (top 5), false, or the top N contributions (<= {MAX_EXPLAIN}).",
                    },
                ],
                "responses": {"200": _json(_ref("ScoreResponse")), **_ERROR},
            }
        },
        "/v1/models": {
            "get": {
                "summary": "List models with their versions and aliases",
                "operationId": "list_models",
                "responses": {"200": _json(_ref("ModelList")), **_ERROR},
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "A model's version, schema, statistics, operating points and threshold answers",
                "operationId": "get_model",
                "parameters": [
                    _MODEL,
                    {
                        "name": "threshold",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                        "description": "A threshold query, e.g. `maximum recall @ precision >= 0.9`; repeatable.",
                    },
                    {"name": "class", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_ref("ModelDetail")), **_ERROR},
            }
        },
        "/v1/precache": {
            "post": {
                "summary": "Score stored items ahead of their first request (fills the cache)",
                "operationId": "precache",
                "security": token,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PrecacheRequest")}},
                },
                "responses": {"200": _json(_ref("PrecacheResponse")), **_ERROR},
            }
        },
        "/v1/features/{model}": {
            "put": {
                "summary": "Load (replace) rows of a model's feature table",
                "operationId": "load_features",
                "security": token,
                "parameters": [_MODEL],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("FeatureRows")}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["model", "loaded"],
                            "properties": {"model": {"type": "string"}, "loaded": {"type": "integer"}},
                        }
                    ),
                    **_ERROR,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"type": "string"}},
                        }
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the model table is loaded",
                "operationId": "readyz",
                "responses": {"200": _json({"type": "object", "required": ["status"]}), **_ERROR},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/v2": {
            "get": {
                "summary": "OIP server metadata",
                "operationId": "oip_server",
                "responses": {
                    "200": _json({"type": "object", "required": ["name", "version", "extensions"]})
                },
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "OIP liveness",
                "operationId": "oip_live",
                "responses": {
                    "200": _json(
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
                    "200": _json(
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
                "responses": {"200": _json(_ref("ModelMetadata")), **_ERROR},
            }
        }
        paths[f"{prefix}/ready"] = {
            "get": {
                "summary": "OIP model readiness",
                "operationId": f"oip_model_ready{suffix}",
                "parameters": params,
                "responses": {"200": _json(ready), **_ERROR},
            }
        }
        paths[f"{prefix}/infer"] = {
            "post": {
                "summary": "OIP inference: one input tensor per feature, shape [n] or [n, 1]",
                "operationId": f"oip_infer{suffix}",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("InferRequest")}},
                },
                "responses": {"200": _json(_ref("InferResponse")), **_ERROR},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "assay",
            "version": __version__,
            "description": "Scores of assessment models, ORES-style (/v1) and Open Inference Protocol (/v2). "
            'Every error is {"error": {"code", "message", "field"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _docs_page(doc: dict[str, Any]) -> str:
    """A dependency-free HTML listing of the endpoints (no CDN scripts: it works offline)."""
    rows = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            secured = " (token)" if op.get("security") else ""
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}{secured}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>assay API</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        "td{padding:.2em 1em;border-bottom:1px solid #ddd}</style>"
        f"</head><body><h1>assay API {html.escape(doc['info']['version'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])}</p>"
        "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<table>{''.join(rows)}</table></body></html>"
    )


def routes() -> list[BaseRoute]:
    doc = document()
    body = orjson.dumps(doc)
    page = _docs_page(doc)

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
    ]
