"""The "Data in" pages: what the engineers' doors received and refused, and the
mapping of Segment track names onto Tenure's event types."""

from __future__ import annotations

import datetime as dt

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from app import clock
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from members import ingest, segment
from members.errors import InvalidField

PERIODS = (7, 30, 90)


class MappingForm(FlaskForm):
    event_name = StringField(
        _l("Track event name"),
        validators=[DataRequired(), Length(max=segment.MAX_EVENT_NAME)],
        description=_l("As your app sends it, e.g. “Order Completed” (any case)."),
    )
    event_type = StringField(
        _l("Tenure event type"),
        validators=[DataRequired(), Length(max=64)],
        description=_l("order, login, app_open… or your own, e.g. wishlist_add."),
        render_kw={"list": "event-types", "autocomplete": "off"},
    )


class ResetForm(FlaskForm):
    event_name = StringField(validators=[DataRequired(), Length(max=segment.MAX_EVENT_NAME)])


@bp.get("/data-in")
@login_required
def data_in():
    days = request.args.get("days", PERIODS[0], type=int)
    if days not in PERIODS:
        days = PERIODS[0]
    today = clock.local_date(clock.now())
    daily, rejections = ingest.counts_since(db.session, today - dt.timedelta(days=days - 1))
    totals = ingest.DayCounts(today, "all")
    for row in daily:
        totals.accepted += row.accepted
        totals.duplicate += row.duplicate
        totals.rejected += row.rejected
    return render_template(
        "data_in.html",
        daily=daily,
        rejections=rejections[:100],
        more_reasons=max(len(rejections) - 100, 0),
        totals=totals,
        days=days,
        periods=PERIODS,
        busiest=max((row.total for row in daily), default=0),
    )


@bp.get("/data-in/event-mapping")
@login_required
def event_mapping():
    return _render_mapping(MappingForm())


def _render_mapping(form: MappingForm, status: int = 200):
    return (
        render_template(
            "event_mapping.html",
            rows=segment.mapping_rows(db.session),
            form=form,
            reset_form=ResetForm(formdata=None),
            known_types=sorted(ingest.KNOWN_TYPES),
            can_edit=current_user.role in (Role.ADMIN, Role.MARKETER),
        ),
        status,
    )


@bp.post("/data-in/event-mapping")
@role_required(Role.ADMIN, Role.MARKETER)
def set_event_mapping():
    form = MappingForm()
    if not form.validate_on_submit():
        return _render_mapping(form, status=400)
    try:
        changed = segment.set_mapping(
            db.session,
            form.event_name.data,
            form.event_type.data.strip(),
            actor=f"user:{current_user.email}",
            now=clock.now(),
        )
    except InvalidField as exc:
        getattr(form, exc.field).errors.append(exc.message)
        return _render_mapping(form, status=400)
    db.session.commit()
    name, type_ = form.event_name.data.strip(), form.event_type.data.strip()
    if changed:
        flash(_("“%(name)s” now becomes %(type)s events.", name=name, type=type_))
    else:
        flash(_("“%(name)s” already becomes %(type)s events.", name=name, type=type_))
    return redirect(url_for("web.event_mapping"))


@bp.post("/data-in/event-mapping/reset")
@role_required(Role.ADMIN, Role.MARKETER)
def reset_event_mapping():
    form = ResetForm()
    if not form.validate_on_submit():
        abort(400)
    name = form.event_name.data
    if segment.reset_mapping(db.session, name, actor=f"user:{current_user.email}", now=clock.now()):
        db.session.commit()
        flash(_("Your mapping of “%(name)s” is removed.", name=name))
    return redirect(url_for("web.event_mapping"))
