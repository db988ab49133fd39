"""The points rules page: what members earn per yuan and per action, double-points
days and the birthday multiplier, and when points expire."""

from __future__ import annotations

import re
from typing import Any

from flask import redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import DecimalField, IntegerField, TextAreaField
from wtforms.validators import InputRequired, NumberRange

from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web import programme as programme_pages
from members import points
from members.errors import InvalidFields
from members.member import Member

_BONUS_LINE = re.compile(r"^\s*(\S+)\s*[x×*]?\s*(\S+)?\s*$")


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
        validators=[InputRequired(message=_l("Enter a number.")), NumberRange(0, 1000)],
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
            bonus.append(
                {
                    "day": day,
                    "multiplier": int(multiplier) if multiplier and multiplier.isdigit() else None,
                }
            )
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
