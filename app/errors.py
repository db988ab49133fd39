"""One place where errors become answers: problem+json for the API, pages for people.

Known errors (HTTP exceptions, validation errors, CSRF failures) map to 4xx; anything
else is logged with the request id and answered with a 500 that shows no traceback.
"""

from __future__ import annotations

import http
import logging
from typing import Any

from flask import Response, g, jsonify, render_template, request
from flask_smorest import Api
from flask_smorest.spec import prepare_response
from flask_wtf.csrf import CSRFError
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
JSON_PREFIXES = ("/api/", "/v1/", "/hooks/")
# Where webargs found the bad input: the first level of its error dict.
LOCATIONS = frozenset({"json", "query", "form", "headers", "files", "view_args"})


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES) or request.path == "/healthz"


def field_errors(messages: Any, location: str | None = None, prefix: str = "") -> list[dict]:
    """Flatten marshmallow's nested error dict into [{field, in, message}]."""
    if isinstance(messages, str):
        return [{"field": prefix or None, "in": location or "json", "message": messages}]
    if isinstance(messages, list):
        return [e for item in messages for e in field_errors(item, location, prefix)]
    out: list[dict] = []
    for key, value in (messages or {}).items():
        if location is None and key in LOCATIONS:
            out.extend(field_errors(value, key, prefix))
        else:
            out.extend(field_errors(value, location, f"{prefix}.{key}" if prefix else str(key)))
    return out


def problem(
    status: int, detail: str | None = None, errors: list[dict] | None = None, **extra: Any
) -> Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": _title(status), "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body["request_id"] = getattr(g, "request_id", None)
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def _title(status: int) -> str:
    return HTTP_STATUS_CODES.get(status, "Error")


def _code(status: int) -> str:
    """400 -> bad_request, as Segment's API names its errors."""
    return _title(status).lower().replace(" ", "_").replace("-", "_")


class FieldErrorSchema(Schema):
    field = fields.Str(allow_none=True, metadata={"description": "e.g. scopes.1"})
    in_ = fields.Str(data_key="in", metadata={"description": "json, query, headers, ..."})
    message = fields.Str()


class ProblemSchema(Schema):
    """An RFC 9457 problem document, as every error of the API is answered."""

    type = fields.Str()
    title = fields.Str()
    status = fields.Int()
    detail = fields.Str()
    errors = fields.List(fields.Nested(FieldErrorSchema))
    request_id = fields.Str()
    code = fields.Str(metadata={"description": "/v1 only: e.g. bad_request, as Segment's"})
    message = fields.Str(metadata={"description": "/v1 only: what the SDKs log"})


class TenureApi(Api):
    """flask-smorest's Api with Tenure's error answers instead of its JSON format."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        """Document error responses as application/problem+json, as they are sent."""
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Any error, as a problem document", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

    def handle_http_exception(self, error: HTTPException):  # type: ignore[override]
        return handle_http_exception(error)


def handle_http_exception(error: HTTPException):
    code = error.code or 500
    if code >= 500:
        # The session may be mid-failure; rendering the page must not touch it again.
        from app.extensions import db

        db.session.rollback()
        # Flask has logged the original exception; keep its message from the user.
        error = InternalServerError() if not isinstance(error, InternalServerError) else error
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if error.response is not None and code < 500:
        headers.update(error.get_headers())
    errors = field_errors(data.get("errors") or data.get("messages") or {})
    if wants_json():
        detail = data.get("message") or (error.description if code < 500 else None)
        if code == 422 and errors:
            detail = "The request has invalid fields: " + ", ".join(
                sorted({str(e["field"]) for e in errors})
            )
        extra = {}
        if request.path.startswith("/v1/"):
            # The Segment and RudderStack SDKs read "code" and "message" from any error.
            extra = {"code": _code(code), "message": detail or _title(code)}
        response = problem(code, detail, errors, **extra)
        for name, value in headers.items():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response
    return (
        render_template("error.html", status=code, title=_title(code), detail=_page_detail(error)),
        code,
        {k: v for k, v in headers.items() if k.lower() != "content-type"},
    )


def _page_detail(error: HTTPException) -> str | None:
    if (error.code or 500) >= 500:
        return None
    if isinstance(error, CSRFError):
        return (
            f"{error.description} The form was open too long or did not come from this site: "
            "go back, reload the page and try again."
        )
    return getattr(error, "description", None)
