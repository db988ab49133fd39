"""The tier ladder page: marketers name the 3 to 5 levels in Chinese and English, set
what each asks for over a rolling window, and the grace period before a demotion."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from flask import redirect, render_template, url_for
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import DecimalField, FieldList, Form, FormField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web import programme as programme_pages
from members import tiers
from members.errors import InvalidFields
from members.member import Member


class LevelForm(Form):
    key = StringField(_l("Key"), validators=[Optional(), Length(max=32)])
    name_zh = StringField(_l("Name (中文)"), validators=[Optional(), Length(max=32)])
    name_en = StringField(_l("Name (English)"), validators=[Optional(), Length(max=32)])
    min_spend = DecimalField(
        _l("Spend at least (¥)"), places=2, validators=[Optional(), NumberRange(min=0)]
    )
    min_orders = IntegerField(_l("or orders"), validators=[Optional(), NumberRange(min=0)])
    min_contributions = IntegerField(
        _l("or reviews, shares, referrals"), validators=[Optional(), NumberRange(min=0)]
    )

    def is_empty(self) -> bool:
        return not any((self.key.data, self.name_zh.data, self.name_en.data))


class TierLadderForm(FlaskForm):
    levels = FieldList(
        FormField(LevelForm), min_entries=tiers.MAX_LEVELS, max_entries=tiers.MAX_LEVELS
    )
    window_days = SelectField(
        _l("Counted over the last"),
        choices=[SelectChoice(d, _l("%(n)d days", n=d)) for d in tiers.WINDOWS],
        coerce=int,
    )
    grace_days = IntegerField(
        _l("Grace period before moving down (days)"),
        validators=[InputRequired(message=_l("Enter a whole number.")), NumberRange(0, 3650)],
        description=_l(
            "A member who falls short keeps their level this long; 0 moves them at once."
        ),
    )

    ladder_errors: list[str] = []  # noqa: RUF012 - replaced per instance by show()

    @classmethod
    def of(cls, ladder: tiers.TierLadder) -> TierLadderForm:
        data = ladder.as_dict()
        data["levels"] = [dataclasses.asdict(level) for level in ladder.levels]  # Decimals
        return cls(data=data)

    def rows(self) -> list[tuple[int, LevelForm]]:
        """The filled rows and their position on the page."""
        return [(i, entry.form) for i, entry in enumerate(self.levels) if not entry.form.is_empty()]

    def document(self) -> dict[str, Any]:
        levels = []
        for _i, level in self.rows():
            spend: Decimal | None = level.min_spend.data
            levels.append(
                {
                    "key": (level.key.data or "").strip(),
                    "name_zh": level.name_zh.data or "",
                    "name_en": level.name_en.data or "",
                    "min_spend": None if spend is None else str(spend),
                    "min_orders": level.min_orders.data,
                    "min_contributions": level.min_contributions.data,
                }
            )
        return {
            "levels": levels,
            "window_days": self.window_days.data,
            "grace_days": self.grace_days.data,
        }

    def show(self, errors: dict[str, str]) -> None:
        """Put the ladder's errors next to their fields (levels.N counts filled rows)."""
        rows = self.rows()
        self.ladder_errors = []
        for name, message in errors.items():
            parts = name.split(".")
            if name == "levels":
                self.ladder_errors.append(message)
                continue
            if parts[0] != "levels":
                target = self._fields.get(parts[0], self.grace_days)
            else:
                index = int(parts[1])
                level = rows[index][1] if index < len(rows) else self.levels[0].form
                target = level[parts[2]] if len(parts) > 2 else level.key
            target.errors = [*target.errors, message]


@bp.get("/settings/tiers")
@login_required
def tier_ladder():
    ladder, _version = tiers.load(db.session)
    return _render(TierLadderForm.of(ladder))


@bp.post("/settings/tiers")
@role_required(*programme_pages.EDITORS)
def save_tier_ladder():
    form = TierLadderForm()
    if not form.validate_on_submit():
        return _render(form, status=400)
    try:
        ladder = tiers.parse(form.document())
    except InvalidFields as exc:
        form.show(exc.errors)
        return _render(form, status=400)
    programme_pages.save(tiers.SETTING, ladder, rerun=True)
    return redirect(url_for("web.tier_ladder"))


def _render(form: TierLadderForm, status: int = 200):
    rows = db.session.execute(
        select(Member.tier, func.count())
        .where(Member.erased_at.is_(None), Member.tier.is_not(None))
        .group_by(Member.tier)
    )
    ladder, _version = tiers.load(db.session)
    return (
        render_template(
            "tier_ladder.html",
            form=form,
            ladder=ladder,
            counts=dict(rows.all()),
            setting=tiers.SETTING.row(db.session),
            can_edit=programme_pages.can_edit(),
        ),
        status,
    )
