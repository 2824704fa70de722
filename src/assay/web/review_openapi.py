"""The review API's part of the OpenAPI document (``assay.web.review_api``): sessions,
campaigns, worksets, labels, skips and judgments.

Its schemas are closed (``additionalProperties: false``) so that a field a handler adds or
drops fails the fuzz test (tests/test_openapi_fuzz.py) until it is written here.
"""

from __future__ import annotations

from typing import Any

from assay.review.accounts import ROLES
from assay.review.campaigns import MAX_COMMENT
from assay.review.judgments import MAX_RATIONALE, RULES, STANCES
from assay.web.openapi_schema import (
    ERROR,
    MODEL_REF,
    NAME,
    SCALAR,
    SESSION,
    SESSION_WRITE,
    TOKEN,
    closed_object,
    json_body,
    json_content,
    nullable,
    path_param,
    ref,
)
from assay.web.sessions import CSRF_HEADER, SESSION_COOKIE

_TEXT = {"type": "string"}
_NULLABLE_TEXT = nullable(_TEXT)
_COUNT = {"type": "integer", "minimum": 0}
_RATE = nullable({"type": "number"})  # null where it is undefined (0/0)
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
    **path_param("name", "A campaign's name.", NAME),
    "example": "edits-2026",
}
_JUDGMENT = {**path_param("id", "A judgment's id.", {"type": "integer", "minimum": 1}), "example": 1}


def _campaign_schemas() -> dict[str, Any]:
    """Campaigns as ``Campaign.to_dict``, ``Progress.to_dict`` and ``assay.review.agreement`` give them."""
    campaign = {
        "name": _TEXT,
        "description": _TEXT,
        "model": _TEXT,
        "model_version": {"type": "integer"},
        "classes": _TEXTS,
        "labels_per_item": {"type": "integer", "minimum": 1},
        "extra_labels": {
            **_COUNT,
            "description": "Labels an item may get beyond labels_per_item while it ties.",
        },
        "guidelines": {**_TEXT, "description": "What reviewers read before they label."},
        "class_descriptions": {
            "type": "object",
            "additionalProperties": _TEXT,
            "description": "Class -> what it means, shown next to its button.",
        },
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
    reviewer = closed_object(
        {"username": _TEXT, "pseudonym": _TEXT, "labels": _COUNT, "unsure": _COUNT, "skipped": _COUNT}
    )
    kappa = closed_object(
        {"a": _TEXT, "b": _TEXT, "items": _COUNT, "agreement": {"type": "number"}, "kappa": _RATE}
    )
    counts = {name: _COUNT for name in ("tp", "fp", "fn", "tn")}
    rates = {name: _RATE for name in ("precision", "recall", "accuracy")}
    decision_row = closed_object(
        {
            "name": {**_TEXT, "description": "`decision` (the model's prediction) or an operating point."},
            "class": _TEXT,
            "threshold": nullable({"type": "number"}),
            "query": _NULLABLE_TEXT,
            **counts,
            **rates,
        }
    )
    return {
        "Campaign": closed_object(campaign),
        "Progress": closed_object(
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
        "CampaignList": closed_object(
            {
                "campaigns": {
                    "type": "array",
                    "items": closed_object({**campaign, "progress": ref("Progress")}),
                }
            }
        ),
        "Agreement": closed_object(
            {
                "krippendorff_alpha": _RATE,
                "pairwise_kappa": {"type": "array", "items": kappa},
                "mean_kappa": _RATE,
                "unsure": {**_TEXT, "description": "How `unsure` labels count."},
            }
        ),
        "ModelVsLabels": closed_object(
            {
                "resolved_items": _COUNT,
                "rows": {"type": "array", "items": decision_row},
                "note": _NULLABLE_TEXT,
            }
        ),
        "CampaignReport": closed_object(
            {
                "campaign": ref("Campaign"),
                "progress": ref("Progress"),
                "agreement": ref("Agreement"),
                "model_vs_labels": ref("ModelVsLabels"),
            }
        ),
    }


def _item_status(*statuses: str) -> dict[str, Any]:
    return closed_object({"status": {"type": "string", "enum": list(statuses)}, "item_id": _TEXT})


def _workset_schemas() -> dict[str, Any]:
    """Sessions, worksets as ``review_api._workset_json`` writes them, labels and skips."""
    item = closed_object(
        {
            "item_id": _TEXT,
            "state": {"type": "string", "enum": ["open", "done", "skipped"]},
            "label": {**_NULLABLE_TEXT, "description": "This reviewer's label, once given."},
            "features": {"type": "object", "additionalProperties": SCALAR},
            "link": {**_NULLABLE_TEXT, "description": "The item's page in the product."},
            "prediction": _NULLABLE_TEXT,
            "probability": nullable({"type": "object", "additionalProperties": {"type": "number"}}),
            "explanation": nullable(ref("Explanation")),
        },
        optional=("prediction", "probability", "explanation"),
    )
    item["description"] = "A blind campaign's items have no prediction, probability or explanation."
    workset = closed_object(
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
            **closed_object({"username": _NONBLANK, "password": _NONBLANK}),
            "example": {"username": "alice", "password": "correct horse battery staple"},
        },
        "Session": closed_object(
            {
                "user": closed_object({"username": _TEXT, "role": {"type": "string", "enum": list(ROLES)}}),
                "csrf_token": {**_TEXT, "description": f"Send it as `{CSRF_HEADER}` with every write."},
            }
        ),
        "WorksetResponse": closed_object(
            {"workset": {**nullable(workset), "description": "null: no workset (none taken, or none left)."}}
        ),
        "LabelRequest": {
            **closed_object(
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
        "SkipRequest": {**closed_object({"item_id": _ITEM_ID}), "example": {"item_id": "100004"}},
        "SkipResult": _item_status("skipped"),
    }


def _judgment_schemas() -> dict[str, Any]:
    """Judgments as ``Judgment.to_dict`` gives them, and what creating or endorsing one takes."""
    endorsement = closed_object(
        {
            "user": _TEXT,
            "stance": {"type": "string", "enum": list(STANCES)},
            "comment": _TEXT,
            "created_at": _TIME,
        }
    )
    return {
        "JudgmentRequest": {
            **closed_object(
                {
                    "model": MODEL_REF,
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
        "Judgment": closed_object(
            {
                "id": {"type": "integer"},
                "model": _TEXT,
                "item_id": _TEXT,
                "model_version": nullable({"type": "integer"}),
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
        "JudgmentList": closed_object({"judgments": {"type": "array", "items": ref("Judgment")}}),
        "EndorsementRequest": {
            **closed_object(
                {"stance": {"type": "string", "enum": list(STANCES)}, "comment": _TEXT}, optional=("comment",)
            ),
            "example": {"stance": "endorse", "comment": "agreed"},
        },
    }


def review_schemas() -> dict[str, Any]:
    return {**_campaign_schemas(), **_workset_schemas(), **_judgment_schemas()}


def review_paths() -> dict[str, Any]:
    campaign = [_CAMPAIGN]
    cookie = {"description": f"The session cookie, `{SESSION_COOKIE}`.", "schema": _TEXT}
    retry_after = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
    return {
        "/v1/session": {
            "post": {
                "summary": "Log in: sets the session cookie and returns the CSRF token for writes",
                "description": (
                    "Too many failed logins lock the account, or the client's address, for a while: "
                    "429 `too_many_logins`, the right password included, with `Retry-After` in seconds. "
                    "When too many logins are being checked at once the answer is 503 `busy`."
                ),
                "operationId": "log_in",
                "requestBody": json_body("LoginRequest"),
                "responses": {
                    "200": {**json_content(ref("Session")), "headers": {"Set-Cookie": cookie}},
                    "429": {
                        **json_content(ref("Error"), "Locked out after too many failed logins"),
                        "headers": {"Retry-After": retry_after},
                    },
                    "503": {
                        **json_content(ref("Error"), "Too many logins being checked at once"),
                        "headers": {"Retry-After": retry_after},
                    },
                    **ERROR,
                },
            },
            "delete": {
                "summary": "Log out: the session ends everywhere",
                "operationId": "log_out",
                "security": SESSION_WRITE,
                "responses": {"204": {"description": "Logged out; the cookie is cleared"}, **ERROR},
            },
        },
        "/v1/campaigns": {
            "get": {
                "summary": "Campaigns with their progress: the open ones this account may label (admins: all)",
                "operationId": "list_campaigns",
                "security": SESSION,
                "responses": {"200": json_content(ref("CampaignList")), **ERROR},
            }
        },
        "/v1/campaigns/{name}": {
            "get": {
                "summary": "A campaign with its progress, agreement and the model against the labels; admins only",
                "operationId": "get_campaign",
                "security": SESSION,
                "parameters": campaign,
                "responses": {"200": json_content(ref("CampaignReport")), **ERROR},
            }
        },
        "/v1/campaigns/{name}/workset": {
            "get": {
                "summary": "The reviewer's latest workset in the campaign",
                "operationId": "get_workset",
                "security": SESSION,
                "parameters": campaign,
                "responses": {"200": json_content(ref("WorksetResponse")), **ERROR},
            },
            "post": {
                "summary": "Take a workset: the live one (its life extended), else new items",
                "operationId": "take_workset",
                "security": SESSION_WRITE,
                "parameters": campaign,
                "responses": {"200": json_content(ref("WorksetResponse")), **ERROR},
            },
        },
        "/v1/campaigns/{name}/labels": {
            "post": {
                "summary": "Label an item of the reviewer's workset (stored before the answer)",
                "operationId": "label_item",
                "security": SESSION_WRITE,
                "parameters": campaign,
                "requestBody": json_body("LabelRequest"),
                "responses": {
                    "201": json_content(ref("LabelResult"), "Saved"),
                    "200": json_content(
                        ref("LabelResult"), "Updated: the reviewer's earlier label is replaced"
                    ),
                    **ERROR,
                },
            }
        },
        "/v1/campaigns/{name}/skips": {
            "post": {
                "summary": "Hand an item back to the pool; it never comes back to this reviewer",
                "operationId": "skip_item",
                "security": SESSION_WRITE,
                "parameters": campaign,
                "requestBody": json_body("SkipRequest"),
                "responses": {"200": json_content(ref("SkipResult")), **ERROR},
            }
        },
        "/v1/judgments": {
            "get": {
                "summary": "An item's judgments (model and item_id; the preferred first), else the 50 latest",
                "operationId": "list_judgments",
                "security": [*TOKEN, *SESSION],
                "parameters": [
                    {"name": "model", "in": "query", "schema": _TEXT, "description": "A model name."},
                    {
                        "name": "item_id",
                        "in": "query",
                        "schema": _TEXT,
                        "description": "An item's id; only together with model.",
                    },
                ],
                "responses": {"200": json_content(ref("JudgmentList")), **ERROR},
            },
            "post": {
                "summary": "Record a judgment: a product with its API token, or a person with a session",
                "operationId": "record_judgment",
                "security": [*TOKEN, *SESSION_WRITE],
                "requestBody": json_body("JudgmentRequest"),
                "responses": {"201": json_content(ref("Judgment"), "Recorded"), **ERROR},
            },
        },
        "/v1/judgments/{id}/endorsements": {
            "post": {
                "summary": "Endorse or dispute someone else's judgment (again: the stance changes)",
                "operationId": "endorse_judgment",
                "security": SESSION_WRITE,
                "parameters": [_JUDGMENT],
                "requestBody": json_body("EndorsementRequest"),
                "responses": {"200": json_content(ref("Judgment")), **ERROR},
            }
        },
    }
