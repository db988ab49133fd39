"""Track-name mappings through the API: which Segment ``track`` names become which
Tenure event types, so that engineers can keep them in code (read; write to change)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy.exc import IntegrityError

from app import clock
from app.api.auth import BEARER_DOC, api_actor, require_scope
from app.api.blueprint import Blueprint
from app.auth.models import Scope
from app.extensions import db
from members import segment
from members.errors import InvalidField

blp = Blueprint(
    "track_mappings",
    __name__,
    url_prefix="/api/v1/track-mappings",
    description="Segment track names -> Tenure event types (read; write to change)",
)


class TrackMappingSchema(Schema):
    event_name = fields.Str(metadata={"example": "Order Completed"})
    event_type = fields.Str(metadata={"example": "order"})
    origin = fields.Str(
        metadata={
            "description": "default (built in), changed (a default overridden) or added",
            "example": "default",
        }
    )
    default_type = fields.Str(
        allow_none=True, metadata={"description": "The built-in type, if the name has one"}
    )
    updated_at = fields.DateTime(allow_none=True)
    updated_by = fields.Str(allow_none=True)


class SetTrackMappingSchema(Schema):
    class Meta:
        unknown = RAISE

    event_type = fields.Str(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "A Tenure event type, built in or custom", "example": "order"},
    )


@blp.route("")
class TrackMappings(MethodView):
    @require_scope(Scope.READ, Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(200, TrackMappingSchema(many=True))
    def get(self):
        """Every mapping in force: the built-in ones first, then those you added. A track
        name that no mapping names becomes a custom type in snake_case."""
        return segment.mapping_rows(db.session)


@blp.route("/<anything:event_name>", merge_slashes=False)
class TrackMappingByName(MethodView):
    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.arguments(SetTrackMappingSchema, example={"event_type": "order"})
    @blp.response(200, TrackMappingSchema)
    @blp.alt_response(409, response="CONFLICT")
    def put(self, body, event_name: str):
        """Map a track name (matched whatever its case) onto an event type. Applies to
        messages received from now on; stored events keep their type."""
        try:
            segment.set_mapping(
                db.session, event_name, body["event_type"], actor=api_actor(), now=clock.now()
            )
        except InvalidField as exc:
            where = "view_args" if exc.field == "event_name" else "json"
            abort(422, errors={where: {exc.field: [exc.message]}})
        try:
            db.session.commit()
        except IntegrityError:  # the same name saved by another request just now
            db.session.rollback()
            abort(409, message=f"{event_name!r} was changed at the same time: send it again")
        return _row(event_name)

    @require_scope(Scope.WRITE)
    @blp.doc(**BEARER_DOC)
    @blp.response(204)
    def delete(self, event_name: str):
        """Remove your mapping: a built-in name goes back to its default type, an added
        name becomes a custom type again."""
        try:
            removed = segment.reset_mapping(
                db.session, event_name, actor=api_actor(), now=clock.now()
            )
        except InvalidField as exc:
            abort(422, errors={"view_args": {exc.field: [exc.message]}})
        if not removed:
            abort(404, message=f"no mapping of your own for {event_name!r}")
        db.session.commit()


def _row(event_name: str) -> segment.MappingRow:
    folded = event_name.strip().casefold()
    return next(r for r in segment.mapping_rows(db.session) if r.event_name.casefold() == folded)
