"""The import page: a marketer uploads a CSV file of members or events, sees the report
of every row before anything is written, and imports only a file without bad rows.
The same page downloads the member list as CSV, filtered as the API filters it.

The rows are checked and written by background jobs (app.uploads): the page shows
their progress, refreshing itself, and their outcome.
"""

from __future__ import annotations

import os

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import format_number
from flask_babel import gettext as _
from flask_login import current_user, login_required
from redis import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from werkzeug.exceptions import RequestEntityTooLarge

from app import clock
from app.api.members import export_stream  # the API's export, byte for byte
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import csrf
from app.redis_client import get_redis
from app.redis_server import EmbeddedRedisError
from app.uploads import (
    CHECKING,
    FAILED,
    IMPORTING,
    RUNNING,
    SHOWN_ERRORS,
    UPLOAD_TTL,
    Uploads,
)
from app.web import bp
from app.web.forms import (
    FILE_TOO_LARGE,
    MAX_UPLOAD_BYTES,
    ConfirmImportForm,
    ExportForm,
    ImportForm,
)
from members import csv_import
from members.errors import InvalidField
from members.lifecycle import Stage
from workers import jobs, queues

IMPORTERS = (Role.ADMIN, Role.MARKETER)
# Multipart framing around the file: the request may be this much larger than the file.
FORM_OVERHEAD = 64 * 1024
# A job may take this long: a file of the largest size, checked or written.
JOB_TIMEOUT = 2 * 3600
UPLOAD_TTL_SECONDS = int(UPLOAD_TTL.total_seconds())


@bp.get("/import")
@login_required
def import_page():
    return _render()


def _render(
    form: ImportForm | None = None,
    *,
    upload: dict | None = None,
    export_form: ExportForm | None = None,
    status: int = 200,
):
    report = (upload or {}).get("report")
    return (
        render_template(
            "import.html",
            form=form or ImportForm(formdata=None, kind=(upload or {}).get("kind")),
            export_form=export_form or ExportForm(formdata=None),
            confirm_form=ConfirmImportForm(formdata=None),
            can_import=current_user.role in IMPORTERS,
            upload=upload,
            report=report,
            sample_columns=_columns(report["sample"]) if report else [],
            running=bool(upload) and upload["state"] in RUNNING,
            # The words of `flask --app wsgi import`, so that both doors read alike.
            stored=", ".join(
                f"{format_number(n)} {what}"
                for what, n in sorted((upload or {}).get("stored", {}).items())
            ),
            shown_errors=SHOWN_ERRORS,
        ),
        status,
    )


def _columns(rows: list[dict[str, str]]) -> list[str]:
    """Every column of the sample rows, in the order they first appear."""
    return list(dict.fromkeys(name for row in rows for name in row))


# CSRF is checked in the view, once the larger size limit of uploads is set: the
# app-wide check would read the body under the 2 MB limit of every other form.
@bp.post("/import")
@csrf.exempt
@role_required(*IMPORTERS)
def import_check():
    """Keep the file and start its check; refuse at once what cannot be read."""
    request.max_content_length = MAX_UPLOAD_BYTES + FORM_OVERHEAD
    try:
        csrf.protect()
    except RequestEntityTooLarge:
        form = ImportForm(formdata=None)
        form.file.errors = [FILE_TOO_LARGE]
        return _render(form, status=413)
    form = ImportForm()
    if not form.validate_on_submit():
        return _render(form, status=413 if FILE_TOO_LARGE in form.file.errors else 400)
    data = form.file.data.read()
    try:
        first = _first_row(form.kind.data, csv_import.decode(data))
    except csv_import.CsvError as exc:
        form.file.errors.append(str(exc))
        return _render(form, status=400)
    if first is None:
        form.file.errors.append(_("The file has a header but no rows."))
        return _render(form, status=400)
    uploads = Uploads.of(current_app)
    token = uploads.create(
        data,
        kind=form.kind.data,
        filename=_display_name(form.file.data.filename),
        user_id=current_user.id,
    )
    if not _enqueue(uploads, token, CHECKING, jobs.check_upload, token):
        return _render(form, status=503)
    return redirect(url_for("web.import_upload", token=token), 303)


def _first_row(kind: str, text: str):
    """Read the header and the first row: what is wrong with the whole file shows here."""
    rows = (
        csv_import.parse_members(text)
        if kind == "members"
        else csv_import.parse_events(text, clock.now())
    )
    return next(iter(rows), None)


@bp.get("/import/<token>")
@login_required
def import_upload(token: str):
    """An upload's check, import or outcome; the page refreshes while a job runs."""
    uploads = Uploads.of(current_app)
    upload = uploads.get(token, current_user.id)
    if upload is None:
        abort(404)
    return _render(upload=_notice_dead_job(uploads, upload))


@bp.post("/import/<token>/confirm")
@role_required(*IMPORTERS)
def import_confirm(token: str):
    """Import a file that passed its check; a second confirm finds it taken."""
    form = ConfirmImportForm()
    if not form.validate_on_submit():
        abort(400)
    uploads = Uploads.of(current_app)
    upload = uploads.claim(token, current_user.id)
    if upload is None:
        flash(_("This upload has expired or was imported already: upload the file again."), "error")
        return _render(status=404)
    actor = f"user:{current_user.email}"
    if not _enqueue(uploads, token, IMPORTING, jobs.import_upload, token, actor):
        return _render(status=503)
    return redirect(url_for("web.import_upload", token=token), 303)


def _job_id(token: str, state: str) -> str:
    return f"upload-{token}-{state}"


def _enqueue(uploads: Uploads, token: str, state: str, func, *args) -> bool:
    try:
        Queue(queues.DEFAULT, connection=get_redis()).enqueue(
            func,
            *args,
            job_id=_job_id(token, state),
            job_timeout=JOB_TIMEOUT,
            result_ttl=UPLOAD_TTL_SECONDS,
            failure_ttl=UPLOAD_TTL_SECONDS,
        )
    except (RedisError, EmbeddedRedisError, OSError):
        uploads.finish(token, state=FAILED, problem="the background workers cannot be reached")
        flash(_("The background workers cannot be reached: try again in a minute."), "error")
        return False
    return True


def _notice_dead_job(uploads: Uploads, upload: dict) -> dict:
    """A job that ended without saying so (its worker killed, Redis flushed): the
    upload failed. Only the job writes the state while it runs; this runs after."""
    if upload["state"] not in RUNNING:
        return upload
    try:
        job = Job.fetch(_job_id(upload["token"], upload["state"]), connection=get_redis())
        status = job.get_status()
    except NoSuchJobError:
        status = None  # lost with Redis
    except (RedisError, EmbeddedRedisError, OSError):
        return upload  # cannot tell now; the next refresh asks again
    if status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return upload
    if status == JobStatus.FINISHED:  # the job saw its state written meanwhile; look again
        upload = uploads.get(upload["token"]) or upload
        if upload["state"] not in RUNNING:
            return upload
    problem = "the background job stopped before the end"
    uploads.finish(upload["token"], state=FAILED, problem=problem)
    return uploads.get(upload["token"]) or upload


def _display_name(filename: str | None) -> str:
    """The uploaded file's own name, for the page and the audit log only (never a path)."""
    name = os.path.basename((filename or "").replace("\\", "/")).strip()
    return "".join(c for c in name if c.isprintable())[:200] or "upload.csv"


@bp.get("/members/export.csv")
@login_required
def export_members():
    """The members matching the filters, as CSV: the same bytes as the API's export."""
    form = ExportForm(request.args)
    if not form.validate():
        return _render(export_form=form, status=400)
    try:
        filters = csv_import.export_filter(
            timezone=current_app.config["TENURE_SETTINGS"].timezone,
            stage=Stage(form.stage.data) if form.stage.data else None,
            tier=form.tier.data,
            region=form.region.data,
            joined_from=form.joined_from.data,
            joined_to=form.joined_to.data,
            attributes=dict([form.attribute.data.split(":", 1)]) if form.attribute.data else {},
        )
    except InvalidField as exc:
        getattr(form, exc.field).errors.append(exc.message)
        return _render(export_form=form, status=400)
    stream = export_stream(current_app._get_current_object(), filters)
    response = Response(stream, mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="members.csv"'
    return response
