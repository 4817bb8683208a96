"""The OpenAPI 3.1 document of the gateway, served pre-encoded at `GET /openapi.json`.

The chat request body is described by the same msgspec structs that validate it
(:mod:`gateway.schema`, and the ``booagent`` options of :mod:`ensemble.base`), so the document
cannot drift from the parser. The chat handler still reads the raw body and validates it
itself: Litestar never sees a body type, so every error keeps the OpenAI shape with ``param``.

The document is built once per app start: the model names the gateway answers to and whether
API keys are required are part of this gateway's contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any

import msgspec

from ensemble.base import Options
from gateway.schema import FORWARDED, ChatBody

_REF = "#/components/schemas/{name}"
_NULLABLE_STRING = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}

ERROR = {
    "title": "Error",
    "description": "Every error the gateway returns: the OpenAI error body.",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": _NULLABLE_STRING,
                "code": _NULLABLE_STRING,
            },
        }
    },
}

CHAT_COMPLETION = {
    "title": "ChatCompletion",
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": _INT,
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": _INT,
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": _NULLABLE_STRING,
                            "tool_calls": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "finish_reason": _NULLABLE_STRING,
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            "properties": {
                name: _INT for name in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        },
        "booagent": {
            "description": "How the answer was made: strategy, node, attempts, member calls.",
            "type": "object",
        },
    },
}

MODEL_LIST = {
    "title": "ModelList",
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": _INT,
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}

HEALTH = {
    "title": "Health",
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}

READY = {
    "title": "Ready",
    "type": "object",
    "required": ["ready", "nodes"],
    "properties": {
        "ready": {"type": "boolean"},
        "nodes": {"type": "array", "items": {"type": "string"}},
    },
}

CLUSTER_NODE = {
    "title": "ClusterNode",
    "type": "object",
    "required": ["name", "member", "state", "breaker", "in_flight", "queued", "capacity"],
    "properties": {
        "name": {"type": "string"},
        "member": {"type": "string"},
        "url": {"type": "string"},
        "kind": _NULLABLE_STRING,
        "state": {"enum": ["ready", "loading", "down", "unknown"]},
        "breaker": {"type": "string"},
        "in_flight": _INT,
        "queued": _INT,
        "capacity": _INT,
        "ttft_seconds": _NUMBER_OR_NULL,
        "tokens_per_second": _NUMBER_OR_NULL,
        "served": _INT,
        "failed": _INT,
        "last_error": _NULLABLE_STRING,
    },
}

CLUSTER = {
    "title": "Cluster",
    "type": "object",
    "required": ["virtual_model", "nodes"],
    "properties": {
        "virtual_model": {"type": "string"},
        "nodes": {"type": "array", "items": {"$ref": _REF.format(name="ClusterNode")}},
    },
}

_CHAT_ERRORS = {
    "400": "Malformed JSON, or a wrong or missing field (`param` names it)",
    "404": "Unknown model",
    "413": "The body is larger than `max_body_bytes`",
    "429": "Waited longer than the queue timeout for a free slot",
    "502": "Every attempt failed",
    "503": "No node is ready for the model, or every node was overloaded",
    "504": "Every attempt timed out",
}


def openapi_json(models: Sequence[str], members: Sequence[str], *, auth: bool) -> bytes:
    """The encoded document for a gateway answering to ``models``, whose members are
    ``members``; ``auth`` says whether API keys are required."""
    return msgspec.json.encode(openapi_document(models, members, auth=auth))


def openapi_document(
    models: Sequence[str], members: Sequence[str], *, auth: bool
) -> dict[str, Any]:
    """The document as plain data (see :func:`openapi_json`)."""
    guarded: list[dict[str, list[str]]] = [{"bearer": []}] if auth else []
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "booagent-cluster",
            "version": _version(),
            "description": "An OpenAI-compatible gateway over a cluster of llama.cpp nodes.",
        },
        "paths": _paths(guarded),
        "components": {"schemas": _schemas(models, members)},
    }
    if auth:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


def _paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    auth_errors = {"401": "Missing or wrong API key"} if security else {}
    models = _operation("List the models", "listModels", security, _json("ModelList"), auth_errors)
    return {
        "/v1/chat/completions": {"post": _chat(security, auth_errors)},
        "/v1/models": {"get": models},
        "/models": {"get": {**models, "operationId": "listModelsUnversioned"}},
        "/health": {"get": _operation("The gateway is alive", "health", [], _json("Health"), {})},
        "/ready": {"get": _ready()},
        "/v1/cluster": {
            "get": _operation(
                "Every node's state", "cluster", security, _json("Cluster"), auth_errors
            )
        },
    }


def _chat(security: list[dict[str, list[str]]], auth_errors: dict[str, str]) -> dict[str, Any]:
    answer = {
        "application/json": {"schema": {"$ref": _REF.format(name="ChatCompletion")}},
        "text/event-stream": {
            "schema": {
                "description": "With `stream: true`, one event per `chat.completion.chunk`,"
                " then `[DONE]`; a stream cut by a node failure ends with an error object"
                " instead. Before OpenAPI 3.2, `schema` describes each event of a stream.",
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string"}},
            },
        },
    }
    operation = _operation(
        "Create a chat completion",
        "createChatCompletion",
        security,
        answer,
        {**_CHAT_ERRORS, **auth_errors},
    )
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ChatRequest")}}},
    }
    return operation


def _ready() -> dict[str, Any]:
    operation = _operation("At least one node can serve", "ready", [], _json("Ready"), {})
    operation["responses"]["503"] = {
        "description": "No node can serve",
        "headers": _request_id_header(),
        "content": _json("Ready"),
    }
    return operation


def _operation(
    summary: str,
    operation_id: str,
    security: list[dict[str, list[str]]],
    ok: dict[str, Any],
    errors: dict[str, str],
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": summary, "headers": _request_id_header(), "content": ok}
    }
    for status, description in errors.items():
        responses[status] = {
            "description": description,
            "headers": _request_id_header(),
            "content": _json("Error"),
        }
    return {
        "summary": summary,
        "operationId": operation_id,
        "security": security,
        "parameters": [
            {
                "name": "x-request-id",
                "in": "header",
                "required": False,
                "description": "Your id for the request (kept if it matches"
                " `[A-Za-z0-9._:-]{1,128}`, else replaced)",
                "schema": {"type": "string"},
            }
        ],
        "responses": responses,
    }


def _request_id_header() -> dict[str, Any]:
    return {"x-request-id": {"required": True, "schema": {"type": "string", "minLength": 1}}}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}


def _schemas(models: Sequence[str], members: Sequence[str]) -> dict[str, Any]:
    """Request schemas from the msgspec structs, narrowed to this gateway's names."""
    _, schemas = msgspec.json.schema_components([ChatBody, Options], ref_template=_REF)
    request = schemas.pop("ChatBody")
    request["title"] = "ChatRequest"
    properties = request["properties"]
    properties["model"] = {
        "enum": list(models),
        "description": "The virtual model, `<virtual>:<strategy>`, or a member's name",
    }
    properties["booagent"] = {"anyOf": [{"$ref": _REF.format(name="Options")}, {"type": "null"}]}
    for name in FORWARDED:
        properties.setdefault(name, {"description": "Passed to the node unchecked"})
    request["if"] = {"properties": {"model": {"enum": list(members)}}, "required": ["model"]}
    request["then"] = {
        "properties": {
            "booagent": {
                "description": "`booagent.strategy` applies to the virtual model only",
                "anyOf": [{"type": "null"}, {"properties": {"strategy": {"type": "null"}}}],
            }
        }
    }
    options = schemas["Options"]["properties"]
    options["members"]["anyOf"][0]["items"] = {"enum": list(members)}
    return {
        **schemas,
        "ChatRequest": request,
        "ChatCompletion": CHAT_COMPLETION,
        "ModelList": MODEL_LIST,
        "Health": HEALTH,
        "Ready": READY,
        "ClusterNode": CLUSTER_NODE,
        "Cluster": CLUSTER,
        "Error": ERROR,
    }


def _version() -> str:
    try:
        return metadata.version("booagent-cluster")
    except metadata.PackageNotFoundError:
        return "0"
