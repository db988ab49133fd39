"""Forms of the settings pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length
from wtforms.widgets import CheckboxInput, ListWidget

from app.auth.models import Role, Scope
from app.auth.service import MIN_PASSWORD_LENGTH


class ApiKeyForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(), Length(max=100)],
        description=_l("Who or what uses it, e.g. 'shop backend'"),
    )
    scopes = SelectMultipleField(
        _l("Scopes"),
        choices=[
            SelectChoice(Scope.INGEST.value, _l("ingest: push members and events")),
            SelectChoice(Scope.READ.value, _l("read: read members, results and decisions")),
            SelectChoice(Scope.WRITE.value, _l("write: change journeys and experiments")),
            SelectChoice(Scope.ADMIN.value, _l("admin: everything, including API keys")),
        ],
        validators=[DataRequired(message=_l("Choose at least one scope."))],
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
    )


class RevokeForm(FlaskForm):
    """Only the CSRF token: revoking takes no other input."""


class UserUpdateForm(FlaskForm):
    role = SelectField(_l("Role"), choices=[SelectChoice(r.value, r.value) for r in Role])
    active = BooleanField(_l("Can sign in"))


class UserForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(), Email()])
    role = SelectField(
        _l("Role"),
        choices=[
            SelectChoice(Role.MARKETER.value, _l("marketer: builds journeys and experiments")),
            SelectChoice(Role.ANALYST.value, _l("analyst: reads everything, changes nothing")),
            SelectChoice(Role.ADMIN.value, _l("admin: also manages users, keys and settings")),
        ],
    )
    password = PasswordField(
        _l("Initial password"),
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH)],
        description=_l("At least %(n)d characters.", n=MIN_PASSWORD_LENGTH),
    )
