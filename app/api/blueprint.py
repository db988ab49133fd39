"""The API's Blueprint: flask-smorest's, with a JSON parser that survives hostile bodies."""

from __future__ import annotations

import http
from collections.abc import Mapping
from typing import Any, NoReturn

import flask
import flask_smorest
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from webargs.flaskparser import FlaskParser, abort, is_json_request


class TenureParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req) and (req.mimetype or req.content_length):
            # webargs would treat the body as absent and answer 422 "missing data".
            abort(
                415,
                messages={"headers": {"Content-Type": ["Send the body as application/json."]}},
            )
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            # json.loads raises RecursionError (not JSONDecodeError) on deep nesting.
            abort(400, messages={"json": ["The JSON nests too deeply."]})


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = TenureParser()

    def arguments(self, schema, *, location="json", **kwargs):
        """flask-smorest's, documenting the 415 that a JSON body's parser answers."""
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return decorator

        def documented(func):
            wrapper = decorator(func)
            responses = wrapper._apidoc["arguments"]["responses"]
            responses[415] = http.HTTPStatus(415).name
            return wrapper

        return documented


def refuse(errors: Mapping[str, str]) -> NoReturn:
    """Answer 422 naming each field of the body that is wrong (a domain error's
    ``field -> message``)."""
    flask_smorest.abort(
        422, errors={"json": {field: [message] for field, message in errors.items()}}
    )


def page_of(session: Session, query: Select, pagination_parameters: Any) -> list[Any]:
    """The page flask-smorest's ``paginate`` asks for: the rows of ``query`` on it, with
    the total count set for its X-Pagination header. A page past the end is empty, and
    never an offset the database cannot hold."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    pagination_parameters.item_count = total or 0
    offset = (pagination_parameters.page - 1) * pagination_parameters.page_size
    if offset >= pagination_parameters.item_count:
        return []
    return list(session.scalars(query.offset(offset).limit(pagination_parameters.page_size)))
