"""The JSON API under /api/v1, documented at /api/openapi.json and /api/docs."""

from __future__ import annotations

from flask import current_app
from flask_smorest import Api

from app.api.auth import api_key_identity
from app.extensions import csrf, limiter


def register_api(api: Api) -> None:
    from app.api.events import blp as events_blp
    from app.api.experiments import blp as experiments_blp
    from app.api.journeys import blp as journeys_blp
    from app.api.keys import blp as keys_blp
    from app.api.lifecycle import blp as lifecycle_blp
    from app.api.loyalty import blp as loyalty_blp
    from app.api.members import blp as members_blp
    from app.api.messages import blp as messages_blp
    from app.api.providers import blp as providers_blp
    from app.api.settings import blp as settings_blp
    from app.api.templates import blp as templates_blp
    from app.api.track_mappings import blp as track_mappings_blp
    from app.api.webhooks import blp as webhooks_blp

    blueprints = (
        members_blp,
        loyalty_blp,
        events_blp,
        track_mappings_blp,
        settings_blp,
        lifecycle_blp,
        journeys_blp,
        experiments_blp,
        templates_blp,
        messages_blp,
        providers_blp,
        webhooks_blp,
        keys_blp,
    )
    for blp in blueprints:
        csrf.exempt(blp)  # the API authenticates with Bearer keys, not cookies
        if not getattr(blp, "_tenure_limited", False):  # blueprints are module singletons
            limiter.limit(_api_limit, key_func=api_key_identity)(blp)
            blp._tenure_limited = True
        api.register_blueprint(blp)
    from app.api.events import EventInSchema

    if "EventIn" not in api.spec.components.schemas:
        api.spec.components.schema("EventIn", schema=EventInSchema)


def _api_limit() -> str:
    return current_app.config["TENURE_SETTINGS"].api_limit
