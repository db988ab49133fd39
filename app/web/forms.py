"""Forms of the settings and import pages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, FileSize
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from app.auth.models import Role, Scope
from app.auth.service import MIN_PASSWORD_LENGTH
from members.lifecycle import Stage

MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
FILE_TOO_LARGE = _l(
    "The file is larger than %(mb)d MB: split it, or import it with `flask --app wsgi import`.",
    mb=MAX_UPLOAD_MB,
)


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


class ImportForm(FlaskForm):
    kind = RadioField(
        _l("What the file holds"),
        choices=[
            SelectChoice("members", _l("Members (upserted by external_id)")),
            SelectChoice("events", _l("Events (duplicates by event_id are skipped)")),
        ],
        default="members",
        validators=[DataRequired(message=_l("Choose members or events."))],
    )
    file = FileField(
        _l("CSV file"),
        validators=[
            FileRequired(message=_l("Choose a CSV file.")),
            FileSize(MAX_UPLOAD_BYTES, message=FILE_TOO_LARGE),
        ],
        render_kw={"accept": ".csv,text/csv"},
        description=_l(
            "UTF-8 (with or without BOM) or GB18030 as Chinese Excel saves it; at most %(mb)d MB.",
            mb=MAX_UPLOAD_MB,
        ),
    )


class ConfirmImportForm(FlaskForm):
    """Only the CSRF token: the upload is named in the URL."""


class ExportForm(FlaskForm):
    """The filters of the member export (those of GET /api/v1/members), read from a
    GET query: a download changes nothing, so it carries no CSRF token."""

    class Meta:
        csrf = False

    stage = SelectField(
        _l("Stage"),
        choices=[SelectChoice("", _l("any")), *(SelectChoice(s.value, s.value) for s in Stage)],
        default="",
    )
    tier = StringField(_l("Tier"), validators=[Optional(), Length(max=32)])
    region = StringField(_l("Region"), validators=[Optional(), Length(max=64)])
    joined_from = DateField(_l("Joined from"), validators=[Optional()])
    joined_to = DateField(_l("Joined through"), validators=[Optional()])
    attribute = StringField(
        _l("Attribute"),
        validators=[
            Optional(),
            Regexp(r"^[^:]{1,64}:.{0,200}$", message=_l("Write key:value, e.g. channel:tmall.")),
        ],
        description=_l("key:value: members whose attribute equals it"),
    )
