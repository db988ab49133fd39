"""The Segment-compatible door in the OpenAPI document. The endpoints are plain Flask
views (the SDKs' bodies do not fit a strict schema), so their description is written
here, after Segment's HTTP Tracking API spec."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from werkzeug.routing import Map, Rule

OBJECT = {"type": "object", "additionalProperties": True}
NULLABLE_STRING = {"type": "string", "nullable": True}

MESSAGE = {
    "type": "object",
    "description": (
        "A Segment-spec call. `userId` is the member's external id; a call with only an "
        "`anonymousId` is kept until an identify names both. `messageId` is the "
        "idempotency key. Any other Segment field is accepted and ignored."
    ),
    "additionalProperties": True,
    "properties": {
        "type": {
            "type": "string",
            "enum": ["identify", "track", "page", "screen", "group", "alias"],
            "description": "Needed in a batch; implied by the path of a single call",
        },
        "messageId": {"type": "string", "maxLength": 100, "example": "ajs-5f3c1b2e"},
        "userId": {**NULLABLE_STRING, "example": "u-1"},
        "anonymousId": {**NULLABLE_STRING, "example": "507f191e810c19729de860ea"},
        "event": {
            "type": "string",
            "description": "track: its name, mapped onto an event type "
            "(GET /api/v1/track-mappings)",
            "example": "Order Completed",
        },
        "name": {"type": "string", "description": "page and screen: the page's name"},
        "properties": {**OBJECT, "example": {"revenue": 199.0, "currency": "CNY"}},
        "traits": {
            **OBJECT,
            "description": "identify: phone, name, birthday, region, timezone, createdAt map "
            "onto member fields, the rest into attributes",
            "example": {"phone": "13800138000", "name": "张伟"},
        },
        "context": {**OBJECT, "description": "RudderStack sends traits as context.traits"},
        "timestamp": {"type": "string", "example": "2026-11-23T10:00:00+08:00"},
        "sentAt": {"type": "string"},
        "writeKey": {"type": "string", "description": "The write key, if not sent as Basic auth"},
    },
}
BATCH = {
    "type": "object",
    "required": ["batch"],
    "additionalProperties": True,
    "properties": {
        "batch": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentMessage"}},
        "writeKey": {"type": "string"},
        "sentAt": {"type": "string"},
        "context": {**OBJECT, "description": "Shared by every message of the batch"},
    },
}
RESULT = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "messageId": NULLABLE_STRING,
        "status": {
            "type": "string",
            "enum": ["accepted", "duplicate", "rejected", "ignored"],
        },
        "field": NULLABLE_STRING,
        "reason": NULLABLE_STRING,
    },
}
ANSWER = {
    "type": "object",
    "description": "Always 200 for a readable, authenticated body: the SDKs drop a whole "
    "batch on any 4xx, so each message is answered on its own.",
    "properties": {
        "success": {"type": "boolean"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentResult"}},
    },
}
IDENTIFY = {
    "userId": "u-1",
    "messageId": "ajs-identify-0001",
    "traits": {"phone": "13800138000", "name": "李娜", "favourite_store": "南京西路店"},
}
TRACK = {
    "userId": "u-1",
    "event": "Order Completed",
    "messageId": "ajs-order-0001",
    "properties": {"revenue": 199.0, "currency": "CNY", "category": "美妆"},
    "timestamp": "2026-11-23T10:00:00+08:00",
}
# kind: (summary, example)
SINGLE = {
    "identify": ("Create or update a member from its traits", IDENTIFY),
    "track": ("Store an event; its name is mapped onto an event type", TRACK),
    "page": (
        "Store a page_view event",
        {"userId": "u-1", "name": "Home", "messageId": "ajs-page-0001", "properties": {}},
    ),
    "screen": (
        "Store a screen_view event",
        {"userId": "u-1", "name": "Cart", "messageId": "ajs-screen-0001"},
    ),
    "group": (
        "Accepted and ignored",
        {"userId": "u-1", "groupId": "store-1", "messageId": "ajs-group-0001"},
    ),
    "alias": (
        "Accepted and ignored",
        {"userId": "u-1", "previousId": "guest-1", "messageId": "ajs-alias-0001"},
    ),
}
BATCH_EXAMPLE = {
    "batch": [
        {"type": "identify", **IDENTIFY, "messageId": "ajs-identify-0002"},
        {"type": "track", **TRACK, "messageId": "ajs-order-0002"},
    ]
}


def document(spec: APISpec) -> None:
    if "SegmentMessage" in spec.components.schemas:
        return  # the spec object outlives an app in tests
    spec.components.security_scheme(
        "writeKey",
        {
            "type": "http",
            "scheme": "basic",
            "description": "The write key (an API key with the ingest scope) as the user name, "
            "with an empty password, as the Segment and RudderStack SDKs send it",
        },
    )
    for name, schema in (
        ("SegmentMessage", MESSAGE),
        ("SegmentBatch", BATCH),
        ("SegmentResult", RESULT),
        ("SegmentAnswer", ANSWER),
    ):
        spec.components.schema(name, schema)
    spec.tag({"name": "segment", "description": "Segment-compatible tracking API (/v1)"})
    spec.path(
        "/v1/batch",
        rule=_rule("/v1/batch"),
        operations={
            "post": _operation(
                "Send many calls at once (also /v1/b)",
                "SegmentBatch",
                "Up to 500 KB, 32 KB a message; gzip bodies and JSON sent as text/plain "
                "are read too.",
                BATCH_EXAMPLE,
            )
        },
    )
    for kind, (summary, example) in SINGLE.items():
        spec.path(
            f"/v1/{kind}",
            rule=_rule(f"/v1/{kind}"),
            operations={
                "post": _operation(
                    f"{summary} (also /v1/{kind[0]})",
                    "SegmentMessage",
                    "One call, up to 32 KB.",
                    example,
                )
            },
        )


def _rule(path: str) -> Rule:
    """flask-smorest's spec plugin reads a path from a routing rule."""
    rule = Rule(path, endpoint=path)
    Map([rule])  # binds and compiles it
    return rule


def _operation(summary: str, body: str, description: str, example: dict) -> dict[str, Any]:
    def error(text: str) -> dict[str, Any]:
        return {
            "description": text,
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }

    return {
        "tags": ["segment"],
        "summary": summary,
        "description": description,
        "security": [{"writeKey": []}, {"bearerAuth": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{body}"},
                    "example": example,
                }
            },
        },
        "responses": {
            "200": {
                "description": "Each message's result",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SegmentAnswer"}}
                },
            },
            "400": error("An unreadable or oversize body"),
            "401": error("No write key, or an unknown or revoked one"),
            "403": error("The key lacks the ingest scope"),
            "413": error("The body is over the server's limit"),
            "429": error("Too many requests for this key: wait Retry-After seconds"),
        },
    }
