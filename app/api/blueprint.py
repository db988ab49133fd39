"""The API's Blueprint: flask-smorest's, with a JSON parser that survives hostile bodies."""

from __future__ import annotations

from typing import Any

import flask
import flask_smorest
from webargs.flaskparser import FlaskParser, abort


class TenureParser(FlaskParser):
    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            # json.loads raises RecursionError (not JSONDecodeError) on deep nesting.
            abort(400, messages={"json": ["The JSON nests too deeply."]})


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = TenureParser()
