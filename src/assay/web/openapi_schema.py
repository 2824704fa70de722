"""Building blocks of the OpenAPI document: JSON Schema shorthands, the one error response,
the names the API takes, and who may call an operation (its security schemes).

Shared by ``openapi`` (scoring, operations, inference) and ``review_openapi`` (the review API).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from assay.web.sessions import CSRF_HEADER, SESSION_COOKIE


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(name: str) -> dict[str, Any]:
    """A required JSON request body of the component schema ``name``."""
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # OpenAPI 3.0 ignores keywords beside a $ref, so a nullable reference goes through allOf.
    return {"allOf": [schema], "nullable": True} if "$ref" in schema else {**schema, "nullable": True}


def closed_object(properties: dict[str, Any], *, optional: Iterable[str] = ()) -> dict[str, Any]:
    """A closed object: every property required except ``optional`` ones, no others allowed."""
    absent = set(optional)
    return {
        "type": "object",
        "required": [name for name in properties if name not in absent],
        "properties": properties,
        "additionalProperties": False,
    }


ERROR = {"default": json_content(ref("Error"), "An error, in the one error shape of the API")}
SCALAR = {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}], "nullable": True}


def path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


# What ``registry.check_name`` takes (model, alias and campaign names).
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$"}
# What ``registry.parse_ref`` takes: a safe name, optionally @version or @alias.
MODEL_REF = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}(@.*)?$"}

# Who may call an operation (its ``security``): alternatives, each naming every scheme it needs.
TOKEN: list[dict[str, list[str]]] = [{"bearer": []}]
SESSION: list[dict[str, list[str]]] = [{"session": []}]
SESSION_WRITE: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]
SECURITY_SCHEMES = {
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
AUTH_WORDS = {"bearer": "token", "session": "session", "csrf": "CSRF header"}
