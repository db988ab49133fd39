"""The import page: a marketer uploads a CSV file of members or events, sees the report
of every row before anything is written, and imports only a file without bad rows.
The same page downloads the member list as CSV, filtered as the API filters it.

Between the check and the import the file waits under instance/uploads/, named by a
random token, never in the session cookie. With web processes on several machines,
that folder must be shared (or the sessions sticky) for the confirm to find it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from flask import (
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from app import clock
from app.api.members import _with_bom  # the API's export, byte for byte
from app.auth.models import Role
from app.auth.web import role_required
from app.extensions import csrf, db
from app.web import bp
from app.web.forms import (
    FILE_TOO_LARGE,
    MAX_UPLOAD_BYTES,
    ConfirmImportForm,
    ExportForm,
    ImportForm,
)
from members import audit, csv_import, ingest, profiles
from members.errors import InvalidField
from members.lifecycle import Stage

IMPORTERS = (Role.ADMIN, Role.MARKETER)
SHOWN_ERRORS = 200
# An upload checked but not imported is deleted after this long (it holds personal data).
UPLOAD_TTL = dt.timedelta(hours=12)
# Multipart framing around the file: the request may be this much larger than the file.
FORM_OVERHEAD = 64 * 1024


@bp.get("/import")
@login_required
def import_page():
    return _render()


def _render(
    form: ImportForm | None = None,
    *,
    report: csv_import.Report | None = None,
    upload: dict | None = None,
    export_form: ExportForm | None = None,
    status: int = 200,
):
    return (
        render_template(
            "import.html",
            form=form or ImportForm(formdata=None),
            export_form=export_form or ExportForm(formdata=None),
            confirm_form=ConfirmImportForm(formdata=None, token=(upload or {}).get("token")),
            can_import=current_user.role in IMPORTERS,
            report=report,
            sample_columns=_columns(report.sample) if report else [],
            upload=upload,
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
    """Check the file without writing; keep it for the confirm step only if all rows
    are good."""
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
    upload = {
        "kind": form.kind.data,
        "filename": _display_name(form.file.data.filename),
        "user_id": current_user.id,
    }
    data = form.file.data.read()
    try:
        report = _run(upload["kind"], csv_import.decode(data), write=False)
    except csv_import.CsvError as exc:
        form.file.errors.append(str(exc))
        return _render(form, status=400)
    finally:
        db.session.rollback()  # a check writes nothing; leave no transaction open
    if report.rows == 0:
        form.file.errors.append(_("The file has a header but no rows."))
        return _render(form, status=400)
    if not report.errors:
        upload["token"] = _pending(current_app).save(data, upload)
    return _render(ImportForm(formdata=None, kind=upload["kind"]), report=report, upload=upload)


@bp.post("/import/confirm")
@role_required(*IMPORTERS)
def import_confirm():
    """Import a file checked before, by its token; the file is deleted either way."""
    form = ConfirmImportForm()
    if not form.validate_on_submit():
        return _render(status=400)
    pending = _pending(current_app)
    claimed = pending.claim(form.token.data, current_user.id)
    if claimed is None:
        flash(_("This upload has expired or was imported already: upload the file again."), "error")
        return _render(status=404)
    path, upload = claimed
    try:
        report = _run(upload["kind"], csv_import.decode(path.read_bytes()), write=True)
        if report.errors:  # good at the check, but time moved on (events in the future)
            db.session.rollback()
            flash(_("Rows went bad since the check: nothing was imported."), "error")
            return _render(report=report, upload=upload, status=409)
        audit.record(
            db.session,
            actor=f"user:{current_user.email}",
            action=f"{upload['kind']}.imported",
            target_type="csv_file",
            target_id=upload["filename"][:128],
            details={"rows": report.rows, **report.stored},
            now=clock.now(),
        )
        db.session.commit()
    finally:
        path.unlink(missing_ok=True)
    # The words of `flask --app wsgi import`, so that both doors read alike.
    stored = ", ".join(f"{n} {status}" for status, n in sorted(report.stored.items()))
    flash(_("%(rows)d rows imported: %(stored)s.", rows=report.rows, stored=stored))
    return redirect(url_for("web.import_page"))


def _run(kind: str, text: str, *, write: bool) -> csv_import.Report:
    settings = current_app.config["TENURE_SETTINGS"]
    if kind == "members":
        return csv_import.import_members(db.session, text, now=clock.now(), write=write)
    return csv_import.import_events(
        db.session,
        text,
        now=clock.now(),
        write=write,
        default_currency=settings.currency,
        unknown_members=ingest.UnknownMembers(settings.unknown_members),
    )


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
    stream = _export(current_app._get_current_object(), filters)
    response = Response(stream, mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="members.csv"'
    return response


def _export(app, filters: profiles.MemberFilter) -> Iterator[str]:
    """The export on a session of its own: the stream outlives the request (and its
    context), and a stream never read to its end holds no context open."""
    session = db.state(app).sessionmaker()
    try:
        yield from _with_bom(csv_import.export_members(session, filters))
    finally:
        session.close()


def _pending(app) -> PendingUploads:
    return PendingUploads(Path(app.instance_path) / "uploads", UPLOAD_TTL)


@dataclasses.dataclass(frozen=True)
class PendingUploads:
    """Checked files waiting for their import: <token>.csv beside <token>.json (kind,
    file name, who uploaded). Readable by this process's user only."""

    folder: Path
    ttl: dt.timedelta

    def save(self, data: bytes, meta: dict) -> str:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._sweep()
        token = secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]
        self._write(self.folder / f"{token}.json", json.dumps(meta).encode())
        self._write(self.folder / f"{token}.csv", data)
        return token

    def claim(self, token: str, user_id: int) -> tuple[Path, dict] | None:
        """Take the upload for one import: the rename lets only one of two confirms
        (a double click, two tabs) have it. None when it is gone, stale or another's."""
        meta_path = self.folder / f"{token}.json"
        try:
            meta = json.loads(meta_path.read_bytes())
            age = time.time() - meta_path.stat().st_mtime  # file times are wall-clock
        except (OSError, ValueError):
            return None
        if meta.get("user_id") != user_id or age > self.ttl.total_seconds():
            return None
        claimed = self.folder / f"{token}.importing"
        try:
            (self.folder / f"{token}.csv").rename(claimed)
        except OSError:
            return None
        meta_path.unlink(missing_ok=True)
        return claimed, meta

    def _write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def _sweep(self) -> None:
        """Delete what was never confirmed (or an import that died half-way)."""
        oldest = time.time() - self.ttl.total_seconds()
        for path in self.folder.iterdir():
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()
            except OSError:
                continue  # another process swept it first
