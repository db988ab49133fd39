"""The points pages: the rules (what members earn per yuan and per action, bonus
days and the birthday multiplier, when points expire), and a member's points, where
marketers add or deduct points with a reason."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import format_number
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from wtforms import (
    DateField,
    DecimalField,
    HiddenField,
    IntegerField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional, StopValidation

from app import clock
from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web import programme as programme_pages
from members import points
from members.errors import InvalidField, InvalidFields
from members.fields import mask_phone
from members.loyalty import PointsEntry
from members.member import Member

_BONUS_LINE = re.compile(r"^\s*(\S+)\s*[x×*]?\s*(\S+)?\s*$")


def _finite(form: FlaskForm, field: DecimalField) -> None:
    """NaN and Infinity parse as decimals; NumberRange cannot compare them."""
    if field.data is not None and not field.data.is_finite():
        raise StopValidation(_("Enter a number."))


def _whole(label, help_text, low: int, high: int) -> IntegerField:
    return IntegerField(
        label,
        validators=[InputRequired(message=_l("Enter a whole number.")), NumberRange(low, high)],
        description=help_text,
        render_kw={"min": low, "max": high, "inputmode": "numeric"},
    )


class PointsRulesForm(FlaskForm):
    per_yuan = DecimalField(
        _l("Points per yuan spent"),
        validators=[InputRequired(message=_l("Enter a number.")), _finite, NumberRange(0, 1000)],
        description=_l("Rounded down per order; a refund takes its points back."),
    )
    review = _whole(_l("Per review"), None, 0, 100_000)
    share = _whole(_l("Per share"), None, 0, 100_000)
    checkin = _whole(_l("Per daily check-in"), None, 0, 100_000)
    referral = _whole(_l("Per referral"), None, 0, 100_000)
    bonus_days = TextAreaField(
        _l("Bonus days"),
        description=_l(
            "One per line: a date and its multiplier, e.g. “2026-11-11 2” for double "
            "points on 11.11 (programme calendar)."
        ),
        render_kw={"rows": 4},
    )
    birthday_multiplier = _whole(
        _l("Birthday multiplier"), _l("For orders on the member's birthday; 1 for none."), 1, 10
    )
    expiry_months = _whole(
        _l("Points expire after (months)"),
        _l("Counted from when they were earned; 0: never."),
        0,
        120,
    )
    notice_days = _whole(
        _l("Remind before expiry (days)"),
        _l("The “points expiring” trigger fires this long before; 0: no reminder."),
        0,
        90,
    )

    @classmethod
    def of(cls, rules: points.PointsRules) -> PointsRulesForm:
        data = {
            "per_yuan": rules.per_yuan,
            **dict(rules.per_event),
            "bonus_days": "\n".join(
                f"{b.day.isoformat()} {b.multiplier}" for b in rules.bonus_days
            ),
            "birthday_multiplier": rules.birthday_multiplier,
            "expiry_months": rules.expiry_months,
            "notice_days": rules.notice_days,
        }
        return cls(data=data)

    def document(self) -> dict[str, Any]:
        bonus = []
        for line in (self.bonus_days.data or "").splitlines():
            if not line.strip():
                continue
            match = _BONUS_LINE.match(line)
            day, multiplier = (match.group(1), match.group(2)) if match else (line, None)
            whole = multiplier is not None and re.fullmatch(r"[0-9]{1,3}", multiplier)
            bonus.append({"day": day, "multiplier": int(multiplier) if whole else None})
        return {
            "per_yuan": str(self.per_yuan.data),
            "per_event": {name: self[name].data for name in points.EVENT_POINTS},
            "bonus_days": bonus,
            "birthday_multiplier": self.birthday_multiplier.data,
            "expiry_months": self.expiry_months.data,
            "notice_days": self.notice_days.data,
        }

    def show(self, errors: dict[str, str]) -> None:
        for name, message in errors.items():
            parts = name.split(".")
            if parts[0] == "bonus_days" and len(parts) > 1:
                target = self.bonus_days
                message = _("Line %(n)d: %(m)s", n=int(parts[1]) + 1, m=message)
            elif parts[0] == "per_event" and len(parts) > 1 and parts[1] in self:
                target = self[parts[1]]
            else:
                target = self._fields.get(parts[0], self.per_yuan)
            target.errors = [*target.errors, message]


@bp.get("/settings/points")
@login_required
def points_rules():
    rules, _version = points.load(db.session)
    return _render(PointsRulesForm.of(rules))


@bp.post("/settings/points")
@role_required(*programme_pages.EDITORS)
def save_points_rules():
    form = PointsRulesForm()
    if not form.validate_on_submit():
        return _render(form, status=400)
    try:
        rules = points.parse(form.document())
    except InvalidFields as exc:
        form.show(exc.errors)
        return _render(form, status=400)
    programme_pages.save(points.SETTING, rules, rerun=False)
    return redirect(url_for("web.points_rules"))


def _render(form: PointsRulesForm, status: int = 200):
    totals = db.session.execute(
        select(func.count(), func.coalesce(func.sum(Member.points_balance), 0)).where(
            Member.erased_at.is_(None), Member.points_balance > 0
        )
    ).one()
    return (
        render_template(
            "points_rules.html",
            form=form,
            holders=totals[0],
            outstanding=totals[1],
            setting=points.SETTING.row(db.session),
            can_edit=programme_pages.can_edit(),
        ),
        status,
    )


class AdjustForm(FlaskForm):
    points = IntegerField(
        _l("Points"),
        validators=[InputRequired(message=_l("Enter a whole number."))],
        description=_l(
            "Positive to add, negative to deduct (the points closest to expiring go first)."
        ),
    )
    reason = StringField(
        _l("Reason"),
        validators=[
            InputRequired(message=_l("Say why: it goes into the member's ledger.")),
            Length(max=200),
        ],
        description=_l("e.g. 客服补偿 (service compensation) or 兑换礼品 (gift redeemed)"),
    )
    expires_on = DateField(
        _l("Expires on"),
        validators=[Optional()],
        description=_l("For points added; empty: the rules' expiry."),
    )
    # Made when the form is shown: submitting it twice moves points once.
    idempotency_key = HiddenField(validators=[InputRequired(), Length(max=128)])


@bp.get("/members/points")
@login_required
def find_member_points():
    external_id = (request.args.get("external_id") or "").strip()
    if not external_id:
        return redirect(url_for("web.points_rules"))
    return redirect(url_for("web.member_points", external_id=external_id))


@bp.get("/members/<string(maxlength=128):external_id>/points")
@login_required
def member_points(external_id: str):
    member = _member_or_404(external_id)
    form = AdjustForm(data={"idempotency_key": secrets.token_urlsafe(16)})
    return _render_member(member, form)


@bp.post("/members/<string(maxlength=128):external_id>/points")
@role_required(*programme_pages.EDITORS)
def adjust_member_points(external_id: str):
    member = _member_or_404(external_id)
    form = AdjustForm()
    if not form.validate_on_submit():
        return _render_member(member, form, status=400)
    now = clock.now()
    expires_at = None
    if form.expires_on.data is not None:
        zone = ZoneInfo(current_app.config["TENURE_SETTINGS"].timezone)
        # The end of that day in the programme's calendar.
        expires_at = dt.datetime.combine(form.expires_on.data, dt.time.max, zone)
    rules, _version = points.load(db.session)
    try:
        outcome = points.adjust(
            db.session,
            member,
            form.points.data,
            reason=form.reason.data.strip(),
            now=now,
            rules=rules,
            actor=f"user:{current_user.email}",
            key=form.idempotency_key.data,
            expires_at=expires_at,
        )
        db.session.commit()
    except InvalidField as exc:
        db.session.rollback()
        field = form.expires_on if exc.field == "expires_at" else form.points
        field.errors = [*field.errors, exc.message]
        return _render_member(member, form, status=400)
    except (points.KeyReused, IntegrityError):
        # Sent again with other values, or twice at the same moment: one of them counts.
        db.session.rollback()
        flash(_("This form was already sent: nothing more changed."), "error")
        return redirect(url_for("web.member_points", external_id=external_id))
    if not outcome.replayed:
        flash(
            _(
                "%(p)+d points: the balance is now %(b)s.",
                p=outcome.entry.points,
                b=format_number(outcome.balance),
            ),
            "success",
        )
    return redirect(url_for("web.member_points", external_id=external_id))


def _member_or_404(external_id: str) -> Member:
    member = db.session.scalar(select(Member).where(Member.external_id == external_id))
    if member is None:
        abort(404)
    return member


def _render_member(member: Member, form: AdjustForm, status: int = 200):
    now = clock.now()
    entries = db.session.scalars(
        select(PointsEntry)
        .where(PointsEntry.member_id == member.id)
        .order_by(PointsEntry.at.desc(), PointsEntry.id.desc())
        .limit(50)
    ).all()
    return (
        render_template(
            "member_points.html",
            member=member,
            phone=mask_phone(member.phone),
            lots=points.live_lots(db.session, member.id, now),
            entries=entries,
            form=form,
            can_edit=programme_pages.can_edit(),
        ),
        status,
    )
