"""The OpenAPI document of the JSON API (``/openapi.json``) and a plain docs page (``/docs``).

Written by hand next to the handlers in ``api.py`` (scoring), ``oip_routes.py`` (inference;
its part is ``oip_openapi``), ``review_api.py`` (sessions, campaigns, worksets, labels,
judgments; its part is ``review_openapi``) and ``monitoring.py`` (its own part) and checked against them by schemathesis in the test suite
(tests/test_openapi_fuzz.py): every response the server gives must match this
document, and no request may get a 5xx.
"""

from __future__ import annotations

import html
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from assay import __version__
from assay.serving.explain import MAX_EXPLAIN
from assay.web.monitoring import TAG as MONITORING_TAG
from assay.web.monitoring import monitoring_paths, monitoring_schemas
from assay.web.oip_openapi import oip_paths, oip_schemas
from assay.web.openapi_schema import (
    AUTH_WORDS,
    ERROR,
    MODEL_REF,
    SCALAR,
    SECURITY_SCHEMES,
    TOKEN,
    json_body,
    json_content,
    path_param,
    ref,
)
from assay.web.review_openapi import review_paths, review_schemas
from assay.web.unlearning import UNLEARNING_TAG, unlearning_paths

_MODEL = path_param("model", "A model: `name` (its production alias), `name@3` or `name@alias`.", MODEL_REF)

_TAGS = [
    {"name": "scoring", "description": "Scores, models and feature tables (/v1)."},
    {"name": "operations", "description": "Liveness, readiness and metrics."},
    {"name": "inference", "description": "The Open Inference Protocol (/v2)."},
    {
        "name": "review",
        "description": "Reviewers' sessions, campaigns, worksets, labels and skips; judgments of scores.",
    },
    MONITORING_TAG,
    UNLEARNING_TAG,
]


def _schemas() -> dict[str, Any]:
    """The schemas of the scoring API."""
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
                        "value": SCALAR,
                    },
                },
            },
        },
    }
    return {
        "Explanation": explanation,
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
            "properties": {"error": ref("ErrorDetail")},
            "additionalProperties": False,
        },
        "Item": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "integer"}]},
                "features": {
                    "type": "object",
                    "additionalProperties": SCALAR,
                    "description": "Feature values; they override the stored features of the item.",
                },
                "context": {
                    "type": "object",
                    "additionalProperties": SCALAR,
                    "description": (
                        "Facts about the item that are not features. A version mitigated with per-group "
                        'thresholds reads its attribute here (e.g. {"sex": "Female"}) when the '
                        "attribute is not a feature: the item is decided at its group's threshold; a value "
                        "naming no group is the item's error (unknown_group); no value: the version's "
                        "fallback_threshold. Other keys are not read; a score decided from a context is "
                        "not cached."
                    ),
                },
            },
            "additionalProperties": False,
        },
        "ScoreRequest": {
            "type": "object",
            "required": ["models", "items"],
            "properties": {
                "models": {"type": "array", "minItems": 1, "items": MODEL_REF},
                "items": {"type": "array", "items": ref("Item")},
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
                "decision": ref("GroupDecision"),
                "features": {"type": "object", "additionalProperties": SCALAR},
                "explanation": ref("Explanation"),
            },
            "additionalProperties": False,
        },
        "GroupDecision": {
            "type": "object",
            "description": (
                "Versions mitigated with per-group thresholds only: the threshold the prediction (and each "
                "operating point, at its own per-group thresholds) was decided at."
            ),
            "required": ["attribute", "group", "threshold"],
            "properties": {
                "attribute": {"type": "string"},
                "group": {
                    "type": "string",
                    "nullable": True,
                    "description": "The item's group; null: no group was known (the fallback threshold).",
                },
                "threshold": {"type": "number"},
            },
            "additionalProperties": False,
        },
        "ItemError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": ref("ErrorDetail")},
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
                        "additionalProperties": {"oneOf": [ref("Score"), ref("ItemError")]},
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
            "properties": {"models": {"type": "array", "items": ref("ModelSummary")}},
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
                "models": {"type": "array", "minItems": 1, "items": MODEL_REF},
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
                            "features": {"type": "object", "additionalProperties": SCALAR},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    }


def _scoring_paths() -> dict[str, Any]:
    flag = {"type": "string", "enum": ["true", "false"]}
    return {
        "/v1/scores": {
            "post": {
                "summary": "Score items with one or more models",
                "operationId": "score",
                "requestBody": json_body("ScoreRequest"),
                "responses": {"200": json_content(ref("ScoreResponse")), **ERROR},
            }
        },
        "/v1/scores/{model}/{item_id}": {
            "get": {
                "summary": "Score one stored item",
                "operationId": "score_one",
                "parameters": [
                    _MODEL,
                    path_param("item_id", "The item's id in the model's feature table."),
                    {"name": "features", "in": "query", "schema": flag},
                    {
                        "name": "explain",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^(true|false|[0-9]+)$"},
                        "description": f"true (top 5), false, or the top N contributions (<= {MAX_EXPLAIN}).",
                    },
                ],
                "responses": {"200": json_content(ref("ScoreResponse")), **ERROR},
            }
        },
        "/v1/models": {
            "get": {
                "summary": "List models with their versions and aliases",
                "operationId": "list_models",
                "responses": {"200": json_content(ref("ModelList")), **ERROR},
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
                "responses": {"200": json_content(ref("ModelDetail")), **ERROR},
            }
        },
        "/v1/precache": {
            "post": {
                "summary": "Score stored items ahead of their first request (fills the cache)",
                "operationId": "precache",
                "security": TOKEN,
                "requestBody": json_body("PrecacheRequest"),
                "responses": {"200": json_content(ref("PrecacheResponse")), **ERROR},
            }
        },
        "/v1/features/{model}": {
            "put": {
                "summary": "Load (replace) rows of a model's feature table",
                "operationId": "load_features",
                "security": TOKEN,
                "parameters": [_MODEL],
                "requestBody": json_body("FeatureRows"),
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "required": ["model", "loaded"],
                            "properties": {"model": {"type": "string"}, "loaded": {"type": "integer"}},
                        }
                    ),
                    **ERROR,
                },
            }
        },
    }


def _operations_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {
                    "200": json_content(
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
                "responses": {"200": json_content({"type": "object", "required": ["status"]}), **ERROR},
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
    }


def _tagged(tag: str, paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` with every operation tagged ``tag`` (the docs page groups by tag)."""
    for operations in paths.values():
        for operation in operations.values():
            operation["tags"] = [tag]
    return paths


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the API."""
    paths = {
        **_tagged("scoring", _scoring_paths()),
        **_tagged("operations", _operations_paths()),
        **_tagged("inference", oip_paths()),
        **_tagged("review", review_paths()),
        **_tagged("monitoring", monitoring_paths()),
        **_tagged("unlearning", unlearning_paths()),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "assay",
            "version": __version__,
            "description": "Scores of assessment models, ORES-style (/v1) and Open Inference Protocol (/v2), "
            "and the review API (/v1/session, /v1/campaigns, /v1/judgments). "
            'Every error is {"error": {"code", "message", "field"}}, except under /v2, where errors take '
            'the Open Inference Protocol\'s shape, {"error": "message"}.',
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": {**_schemas(), **oip_schemas(), **review_schemas(), **monitoring_schemas()},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _auth_words(operation: dict[str, Any]) -> str:
    """Who may call ``operation``, for the docs page: " (token)", " (token or session + CSRF header)"."""
    alternatives = [" + ".join(AUTH_WORDS[s] for s in need) for need in operation.get("security", [])]
    return f" ({' or '.join(alternatives)})" if alternatives else ""


def _docs_page(doc: dict[str, Any]) -> str:
    """A dependency-free HTML listing of the endpoints by tag (no CDN scripts: it works offline)."""
    sections = []
    for tag in doc["tags"]:
        rows = [
            f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
            f"<td>{html.escape(op['summary'] + _auth_words(op))}</td></tr>"
            for path, operations in doc["paths"].items()
            for method, op in operations.items()
            if tag["name"] in op["tags"]
        ]
        sections.append(
            f"<h2 id='{tag['name']}'>{html.escape(tag['name'])}</h2><p>{html.escape(tag['description'])}</p>"
            f"<table>{''.join(rows)}</table>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>assay API</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        "td{padding:.2em 1em;border-bottom:1px solid #ddd}</style>"
        f"</head><body><h1>assay API {html.escape(doc['info']['version'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])}</p>"
        "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"{''.join(sections)}</body></html>"
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
