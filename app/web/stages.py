"""The stage rules page: marketers read and edit the thresholds and the precedence,
preview how many members each stage would hold, and save a new version."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import login_required
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField, IntegerField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, NumberRange

from app.auth.web import role_required
from app.extensions import db
from app.web import bp
from app.web import programme as programme_pages
from members import stages, tiers
from members.errors import InvalidFields
from members.lifecycle import LifecycleRun, Stage
from members.member import Member

STAGE_NAMES = {
    Stage.NEW: _l("New"),
    Stage.ACTIVE: _l("Active"),
    Stage.AT_RISK: _l("At risk"),
    Stage.DORMANT: _l("Dormant"),
    Stage.LAPSED: _l("Lapsed"),
    Stage.VIP: _l("VIP"),
}
PLACES = (_l("Wins first"), _l("2nd"), _l("3rd"), _l("4th"), _l("Last"))


def _number(label, help_text, maximum: int = stages.MAX_DAYS) -> IntegerField:
    return IntegerField(
        label,
        validators=[
            InputRequired(message=_l("Enter a whole number.")),
            NumberRange(min=0, max=maximum),
        ],
        description=help_text,
        render_kw={"min": 0, "max": maximum, "inputmode": "numeric"},
    )


class StageRulesForm(FlaskForm):
    new_days = _number(_l("Joined within (days)"), _l("A member this recent is new…"))
    new_max_orders = _number(
        _l("With at most (orders)"), _l("…while they have at most this many orders."), 1000
    )
    active_days = _number(
        _l("Bought within (days)"), _l("A purchase this recent makes a member active.")
    )
    at_risk_days = _number(
        _l("Last order at least (days ago)"),
        _l("An active member whose last order is this old, or older…"),
    )
    at_risk_visit_percent = _number(
        _l("Visits fell below (% of their own earlier rate)"),
        _l(
            "…and whose logins and app opens over the last 14 days fell below this share of "
            "their own daily rate over the 42 days before, is at risk."
        ),
        100,
    )
    dormant_days = _number(
        _l("No purchase for (days)"),
        _l("At most the active window, so that every member has a stage."),
    )
    lapsed_days = _number(
        _l("Lapsed after (days)"), _l("The deep end of dormant: no purchase for this long.")
    )
    vip_top_percent = _number(
        _l("Top share by 365-day spend (%)"),
        _l("Recomputed on every run over all current members; 0 for no VIP stage."),
        50,
    )
    vip_top_tier = BooleanField(
        _l("Members on the top tier are VIP too"),
        description=_l("Besides the top share by spend, everyone on the highest level."),
    )
    place_1 = SelectField(PLACES[0])
    place_2 = SelectField(PLACES[1])
    place_3 = SelectField(PLACES[2])
    place_4 = SelectField(PLACES[3])
    place_5 = SelectField(PLACES[4])

    PLACE_FIELDS = ("place_1", "place_2", "place_3", "place_4", "place_5")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [SelectChoice(s.value, STAGE_NAMES[s]) for s in stages.RANKED]
        for name in self.PLACE_FIELDS:
            self[name].choices = choices

    @classmethod
    def of(cls, rules: stages.StageRules) -> StageRulesForm:
        data = rules.as_dict()
        places = dict(zip(cls.PLACE_FIELDS, data.pop("precedence"), strict=True))
        return cls(data={**data, **places})

    def document(self) -> dict[str, Any]:
        data = {name: self[name].data for name in stages.NUMBERS}
        data["vip_top_tier"] = bool(self.vip_top_tier.data)
        data["precedence"] = [self[name].data for name in self.PLACE_FIELDS]
        return data

    def show(self, errors: dict[str, str]) -> None:
        """Put the rules' own errors next to their fields."""
        for name, message in errors.items():
            target = self.place_1 if name == "precedence" else self[name]
            target.errors = [*target.errors, message]


@bp.get("/settings/stages")
@login_required
def stage_rules():
    rules, _version = stages.load(db.session)
    return _render(StageRulesForm.of(rules))


@bp.post("/settings/stages")
@role_required(*programme_pages.EDITORS)
def save_stage_rules():
    form = StageRulesForm()
    if not form.validate_on_submit():
        return _render(form, status=400)
    try:
        rules = stages.parse(form.document())
    except InvalidFields as exc:
        form.show(exc.errors)
        return _render(form, status=400)
    if request.form.get("action") == "preview":
        top_tier = tiers.load(db.session)[0].levels[-1].key
        return _render(form, preview=stages.preview(db.session, rules, top_tier))
    programme_pages.save(stages.SETTING, rules, rerun=True)
    return redirect(url_for("web.stage_rules"))


def _render(form: StageRulesForm, status: int = 200, preview: dict | None = None):
    current = dict.fromkeys(Stage, 0)
    rows = db.session.execute(
        select(Member.stage, func.count())
        .where(Member.erased_at.is_(None), Member.stage.is_not(None))
        .group_by(Member.stage)
    )
    current.update(dict(rows.all()))
    last_run = db.session.scalars(select(LifecycleRun).order_by(LifecycleRun.id.desc())).first()
    setting = stages.SETTING.row(db.session)
    return (
        render_template(
            "stage_rules.html",
            form=form,
            current=current,
            preview=preview,
            last_run=last_run,
            setting=setting,
            names=STAGE_NAMES,
            order=[*stages.RANKED[:-1], Stage.DORMANT, Stage.LAPSED],
            can_edit=programme_pages.can_edit(),
        ),
        status,
    )
