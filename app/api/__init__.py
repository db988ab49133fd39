"""The JSON API under /api/v1, documented at /api/openapi.json and /api/docs."""

from __future__ import annotations

from flask_smorest import Api

from app.extensions import csrf


def register_api(api: Api) -> None:
    from app.api.events import blp as events_blp
    from app.api.keys import blp as keys_blp
    from app.api.members import blp as members_blp

    for blp in (members_blp, events_blp, keys_blp):
        csrf.exempt(blp)  # the API authenticates with Bearer keys, not cookies
        api.register_blueprint(blp)
