"""The OpenAPI document of the JSON API (``/openapi.json``) and a plain docs page (``/docs``).

Written by hand next to the handlers in ``api.py`` (scoring, inference) and
``review_api.py`` (sessions, campaigns, worksets, labels, judgments) and checked
against them by schemathesis in the test suite (tests/test_openapi_fuzz.py):
every response the server gives must match this document, and no request may
get a 5xx. The review schemas are closed (``additionalProperties: false``) so
that a field a handler adds or drops fails the fuzz test until it is written here.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from assay import __version__
from assay.accounts import ROLES
from assay.judgments import MAX_RATIONALE, RULES, STANCES
from assay.reviews import MAX_COMMENT
from assay.scoring import MAX_EXPLAIN
from assay.web.api import OIP_NUMERIC
from assay.web.sessions import CSRF_HEADER, SESSION_COOKIE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str) -> dict[str, Any]:
    """A required JSON request body of the component schema ``name``."""
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # OpenAPI 3.0 ignores keywords beside a $ref, so a nullable reference goes through allOf.
    return {"allOf": [schema], "nullable": True} if "$ref" in schema else {**schema, "nullable": True}


def _object(properties: dict[str, Any], *, optional: Iterable[str] = ()) -> dict[str, Any]:
    """A closed object: every property required except ``optional`` ones, no others allowed."""
    absent = set(optional)
    return {
        "type": "object",
        "required": [name for name in properties if name not in absent],
        "properties": properties,
        "additionalProperties": False,
    }


_ERROR = {"default": _json(_ref("Error"), "An error, in the one error shape of the API")}
_SCALAR = {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}], "nullable": True}


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


# What ``registry.check_name`` takes (model, alias and campaign names).
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$"}
# What ``registry.parse_ref`` takes: a safe name, optionally @version or @alias.
_REF = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}(@.*)?$"}
_MODEL = _path_param("model", "A model: `name` (its production alias), `name@3` or `name@alias`.", _REF)
_OIP_NAME = _path_param("model", "A model name.", _NAME)
_OIP_VERSION = _path_param("version", "A version number (or alias).")

# Who may call an operation (its ``security``): alternatives, each naming every scheme it needs.
_TOKEN = [{"bearer": []}]
_SESSION = [{"session": []}]
_SESSION_WRITE = [{"session": [], "csrf": []}]
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`assay token create NAME` prints it once).",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The session cookie `POST /v1/session` sets (HttpOnly, SameSite=Lax).",
    },
    "csrf": {
        "type": "apiKey",
        "in": "header",
        "name": CSRF_HEADER,
        "description": "The `csrf_token` `POST /v1/session` returns; every write made with a session sends it.",
    },
}
_AUTH_WORDS = {"bearer": "token", "session": "session", "csrf": "CSRF header"}

_TAGS = [
    {"name": "scoring", "description": "Scores, models and feature tables (/v1)."},
    {"name": "operations", "description": "Liveness, readiness and metrics."},
    {"name": "inference", "description": "The Open Inference Protocol (/v2)."},
    {
        "name": "review",
        "description": "Reviewers' sessions, campaigns, worksets, labels and skips; judgments of scores.",
    },
]


def _schemas() -> dict[str, Any]:
    """The schemas of the scoring and inference API."""
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
                "explanation": _ref("Explanation"),
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


def _scoring_paths() -> dict[str, Any]:
    flag = {"type": "string", "enum": ["true", "false"]}
    return {
        "/v1/scores": {
            "post": {
                "summary": "Score items with one or more models",
                "operationId": "score",
                "requestBody": _body("ScoreRequest"),
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
                "security": _TOKEN,
                "requestBody": _body("PrecacheRequest"),
                "responses": {"200": _json(_ref("PrecacheResponse")), **_ERROR},
            }
        },
        "/v1/features/{model}": {
            "put": {
                "summary": "Load (replace) rows of a model's feature table",
                "operationId": "load_features",
                "security": _TOKEN,
                "parameters": [_MODEL],
                "requestBody": _body("FeatureRows"),
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
    }


def _operations_paths() -> dict[str, Any]:
    return {
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
    }


def _oip_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
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
                "requestBody": _body("InferRequest"),
                "responses": {"200": _json(_ref("InferResponse")), **_ERROR},
            }
        }
    return paths


# --- the review API (assay.web.review_api) -------------------------------------------------

_TEXT = {"type": "string"}
_NULLABLE_TEXT = _nullable(_TEXT)
_COUNT = {"type": "integer", "minimum": 0}
_RATE = _nullable({"type": "number"})  # null where it is undefined (0/0)
_TEXTS = {"type": "array", "items": _TEXT}
# Timestamps are ISO 8601 in UTC; SQLite stores drop the offset, so no format: date-time here.
_TIME = {"type": "string", "description": "ISO 8601 date and time, UTC"}
# What ``review_api._str`` takes: a string with a non-blank character.
_NONBLANK = {"type": "string", "pattern": r"\S"}
_ITEM_ID = {
    "oneOf": [{**_NONBLANK, "maxLength": 200}, {"type": "integer"}],
    "description": "An item's id; a number is taken as its decimal string.",
}
_CAMPAIGN = {
    **_path_param("name", "A campaign's name.", _NAME),
    "example": "edits-2026",
}
_JUDGMENT = {**_path_param("id", "A judgment's id.", {"type": "integer", "minimum": 1}), "example": 1}


def _campaign_schemas() -> dict[str, Any]:
    """Campaigns as ``Campaign.to_dict``, ``Progress.to_dict`` and ``assay.agreement`` give them."""
    campaign = {
        "name": _TEXT,
        "description": _TEXT,
        "model": _TEXT,
        "model_version": {"type": "integer"},
        "classes": _TEXTS,
        "labels_per_item": {"type": "integer", "minimum": 1},
        "reviewers": {**_TEXTS, "description": "Usernames who may label; empty: every account."},
        "blind": {"type": "boolean", "description": "Reviewers are never shown the model's score."},
        "selection": {"type": "object", "description": "How the items were chosen (method, source, ...)."},
        "auto_rules": _TEXTS,
        "link_template": _NULLABLE_TEXT,
        "judgment_rule": {"type": "string", "enum": list(RULES)},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "item_count": _COUNT,
        "created_by": _TEXT,
        "created_at": _TIME,
        "label_choices": {**_TEXTS, "description": "The classes and `unsure`."},
    }
    reviewer = _object(
        {"username": _TEXT, "pseudonym": _TEXT, "labels": _COUNT, "unsure": _COUNT, "skipped": _COUNT}
    )
    kappa = _object(
        {"a": _TEXT, "b": _TEXT, "items": _COUNT, "agreement": {"type": "number"}, "kappa": _RATE}
    )
    counts = {name: _COUNT for name in ("tp", "fp", "fn", "tn")}
    rates = {name: _RATE for name in ("precision", "recall", "accuracy")}
    decision_row = _object(
        {
            "name": {**_TEXT, "description": "`decision` (the model's prediction) or an operating point."},
            "class": _TEXT,
            "threshold": _nullable({"type": "number"}),
            "query": _NULLABLE_TEXT,
            **counts,
            **rates,
        }
    )
    return {
        "Campaign": _object(campaign),
        "Progress": _object(
            {
                "items": _COUNT,
                "auto_labelled": _COUNT,
                "labels": _COUNT,
                "labels_needed": _COUNT,
                "complete_items": _COUNT,
                "reviewers": {"type": "array", "items": reviewer},
                "fraction": {"type": "number"},
            }
        ),
        "CampaignList": _object(
            {"campaigns": {"type": "array", "items": _object({**campaign, "progress": _ref("Progress")})}}
        ),
        "Agreement": _object(
            {
                "krippendorff_alpha": _RATE,
                "pairwise_kappa": {"type": "array", "items": kappa},
                "mean_kappa": _RATE,
                "unsure": {**_TEXT, "description": "How `unsure` labels count."},
            }
        ),
        "ModelVsLabels": _object(
            {
                "resolved_items": _COUNT,
                "rows": {"type": "array", "items": decision_row},
                "note": _NULLABLE_TEXT,
            }
        ),
        "CampaignReport": _object(
            {
                "campaign": _ref("Campaign"),
                "progress": _ref("Progress"),
                "agreement": _ref("Agreement"),
                "model_vs_labels": _ref("ModelVsLabels"),
            }
        ),
    }


def _item_status(*statuses: str) -> dict[str, Any]:
    return _object({"status": {"type": "string", "enum": list(statuses)}, "item_id": _TEXT})


def _workset_schemas() -> dict[str, Any]:
    """Sessions, worksets as ``review_api._workset_json`` writes them, labels and skips."""
    item = _object(
        {
            "item_id": _TEXT,
            "state": {"type": "string", "enum": ["open", "done", "skipped"]},
            "label": {**_NULLABLE_TEXT, "description": "This reviewer's label, once given."},
            "features": {"type": "object", "additionalProperties": _SCALAR},
            "link": {**_NULLABLE_TEXT, "description": "The item's page in the product."},
            "prediction": _NULLABLE_TEXT,
            "probability": _nullable({"type": "object", "additionalProperties": {"type": "number"}}),
            "explanation": _nullable(_ref("Explanation")),
        },
        optional=("prediction", "probability", "explanation"),
    )
    item["description"] = "A blind campaign's items have no prediction, probability or explanation."
    workset = _object(
        {
            "id": {"type": "integer"},
            "expires_at": _TIME,
            "total": _COUNT,
            "finished": _COUNT,
            "items": {"type": "array", "items": item},
        }
    )
    return {
        "LoginRequest": {
            **_object({"username": _NONBLANK, "password": _NONBLANK}),
            "example": {"username": "alice", "password": "correct horse battery staple"},
        },
        "Session": _object(
            {
                "user": _object({"username": _TEXT, "role": {"type": "string", "enum": list(ROLES)}}),
                "csrf_token": {**_TEXT, "description": f"Send it as `{CSRF_HEADER}` with every write."},
            }
        ),
        "WorksetResponse": _object(
            {"workset": {**_nullable(workset), "description": "null: no workset (none taken, or none left)."}}
        ),
        "LabelRequest": {
            **_object(
                {
                    "item_id": _ITEM_ID,
                    "label": _TEXT,
                    "comment": {"type": "string", "maxLength": MAX_COMMENT},
                },
                optional=("comment",),
            ),
            "example": {"item_id": "100003", "label": "True", "comment": "adds a spam link"},
        },
        "LabelResult": _item_status("saved", "updated"),
        "SkipRequest": {**_object({"item_id": _ITEM_ID}), "example": {"item_id": "100004"}},
        "SkipResult": _item_status("skipped"),
    }


def _judgment_schemas() -> dict[str, Any]:
    """Judgments as ``Judgment.to_dict`` gives them, and what creating or endorsing one takes."""
    endorsement = _object(
        {
            "user": _TEXT,
            "stance": {"type": "string", "enum": list(STANCES)},
            "comment": _TEXT,
            "created_at": _TIME,
        }
    )
    return {
        "JudgmentRequest": {
            **_object(
                {
                    "model": _REF,
                    "item_id": _ITEM_ID,
                    "label": {**_TEXT, "description": "One of the model's classes: what the item really is."},
                    "rationale": {"type": "string", "maxLength": MAX_RATIONALE},
                    "campaign": {**_TEXT, "description": "The campaign the item was reviewed in, if any."},
                },
                optional=("rationale", "campaign"),
            ),
            "example": {
                "model": "damaging",
                "item_id": "100003",
                "label": "False",
                "rationale": "reverts vandalism",
            },
        },
        "Judgment": _object(
            {
                "id": {"type": "integer"},
                "model": _TEXT,
                "item_id": _TEXT,
                "model_version": _nullable({"type": "integer"}),
                "campaign": _NULLABLE_TEXT,
                "label": _TEXT,
                "rationale": _TEXT,
                "model_prediction": _NULLABLE_TEXT,
                "author": {**_TEXT, "description": "A username, or `token:NAME` for a product's report."},
                "preferred": {"type": "boolean"},
                "preferred_by": {**_NULLABLE_TEXT, "description": "An admin, or `rule:most_endorsed`."},
                "created_at": _TIME,
                "endorsements": {"type": "array", "items": endorsement},
            }
        ),
        "JudgmentList": _object({"judgments": {"type": "array", "items": _ref("Judgment")}}),
        "EndorsementRequest": {
            **_object(
                {"stance": {"type": "string", "enum": list(STANCES)}, "comment": _TEXT}, optional=("comment",)
            ),
            "example": {"stance": "endorse", "comment": "agreed"},
        },
    }


def _review_schemas() -> dict[str, Any]:
    return {**_campaign_schemas(), **_workset_schemas(), **_judgment_schemas()}


def _review_paths() -> dict[str, Any]:
    campaign = [_CAMPAIGN]
    cookie = {"description": f"The session cookie, `{SESSION_COOKIE}`.", "schema": _TEXT}
    return {
        "/v1/session": {
            "post": {
                "summary": "Log in: sets the session cookie and returns the CSRF token for writes",
                "operationId": "log_in",
                "requestBody": _body("LoginRequest"),
                "responses": {"200": {**_json(_ref("Session")), "headers": {"Set-Cookie": cookie}}, **_ERROR},
            },
            "delete": {
                "summary": "Log out: the session ends everywhere",
                "operationId": "log_out",
                "security": _SESSION_WRITE,
                "responses": {"204": {"description": "Logged out; the cookie is cleared"}, **_ERROR},
            },
        },
        "/v1/campaigns": {
            "get": {
                "summary": "Campaigns with their progress: the open ones this account may label (admins: all)",
                "operationId": "list_campaigns",
                "security": _SESSION,
                "responses": {"200": _json(_ref("CampaignList")), **_ERROR},
            }
        },
        "/v1/campaigns/{name}": {
            "get": {
                "summary": "A campaign with its progress, agreement and the model against the labels; admins only",
                "operationId": "get_campaign",
                "security": _SESSION,
                "parameters": campaign,
                "responses": {"200": _json(_ref("CampaignReport")), **_ERROR},
            }
        },
        "/v1/campaigns/{name}/workset": {
            "get": {
                "summary": "The reviewer's latest workset in the campaign",
                "operationId": "get_workset",
                "security": _SESSION,
                "parameters": campaign,
                "responses": {"200": _json(_ref("WorksetResponse")), **_ERROR},
            },
            "post": {
                "summary": "Take a workset: the live one (its life extended), else new items",
                "operationId": "take_workset",
                "security": _SESSION_WRITE,
                "parameters": campaign,
                "responses": {"200": _json(_ref("WorksetResponse")), **_ERROR},
            },
        },
        "/v1/campaigns/{name}/labels": {
            "post": {
                "summary": "Label an item of the reviewer's workset (stored before the answer)",
                "operationId": "label_item",
                "security": _SESSION_WRITE,
                "parameters": campaign,
                "requestBody": _body("LabelRequest"),
                "responses": {
                    "201": _json(_ref("LabelResult"), "Saved"),
                    "200": _json(_ref("LabelResult"), "Updated: the reviewer's earlier label is replaced"),
                    **_ERROR,
                },
            }
        },
        "/v1/campaigns/{name}/skips": {
            "post": {
                "summary": "Hand an item back to the pool; it never comes back to this reviewer",
                "operationId": "skip_item",
                "security": _SESSION_WRITE,
                "parameters": campaign,
                "requestBody": _body("SkipRequest"),
                "responses": {"200": _json(_ref("SkipResult")), **_ERROR},
            }
        },
        "/v1/judgments": {
            "get": {
                "summary": "An item's judgments (model and item_id; the preferred first), else the 50 latest",
                "operationId": "list_judgments",
                "security": [*_TOKEN, *_SESSION],
                "parameters": [
                    {"name": "model", "in": "query", "schema": _TEXT, "description": "A model name."},
                    {
                        "name": "item_id",
                        "in": "query",
                        "schema": _TEXT,
                        "description": "An item's id; only together with model.",
                    },
                ],
                "responses": {"200": _json(_ref("JudgmentList")), **_ERROR},
            },
            "post": {
                "summary": "Record a judgment: a product with its API token, or a person with a session",
                "operationId": "record_judgment",
                "security": [*_TOKEN, *_SESSION_WRITE],
                "requestBody": _body("JudgmentRequest"),
                "responses": {"201": _json(_ref("Judgment"), "Recorded"), **_ERROR},
            },
        },
        "/v1/judgments/{id}/endorsements": {
            "post": {
                "summary": "Endorse or dispute someone else's judgment (again: the stance changes)",
                "operationId": "endorse_judgment",
                "security": _SESSION_WRITE,
                "parameters": [_JUDGMENT],
                "requestBody": _body("EndorsementRequest"),
                "responses": {"200": _json(_ref("Judgment")), **_ERROR},
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
        **_tagged("inference", _oip_paths()),
        **_tagged("review", _review_paths()),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "assay",
            "version": __version__,
            "description": "Scores of assessment models, ORES-style (/v1) and Open Inference Protocol (/v2), "
            "and the review API (/v1/session, /v1/campaigns, /v1/judgments). "
            'Every error is {"error": {"code", "message", "field"}}.',
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": {**_schemas(), **_review_schemas()},
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def _auth_words(operation: dict[str, Any]) -> str:
    """Who may call ``operation``, for the docs page: " (token)", " (token or session + CSRF header)"."""
    alternatives = [" + ".join(_AUTH_WORDS[s] for s in need) for need in operation.get("security", [])]
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
