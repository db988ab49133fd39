"""CSV files uploaded on the import page, checked and imported by background jobs.

A large file takes minutes to check (phone numbers) and to write, longer than a web
request may last; so the page saves the file, a worker checks it and reports progress,
and the marketer's confirm starts a second job that writes it. The page shows the
state until the job is done.

A file waits under instance/uploads/ named by a random token: ``<token>.csv`` and
``<token>.json``, its state. With web processes and workers on several machines that
folder must be shared. Files are readable by the server's user only, and swept after
``UPLOAD_TTL`` (they hold personal data).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import current_app

from app import clock
from app.extensions import db
from members import audit, csv_import, ingest

UPLOAD_TTL = dt.timedelta(hours=12)
SHOWN_ERRORS = 200
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
PROGRESS_EVERY = 2000  # rows between two writes of the progress

# States: checking -> checked | refused; checked (no bad row) -> importing ->
# imported | failed.
CHECKING, CHECKED, REFUSED, IMPORTING, IMPORTED, FAILED = (
    "checking",
    "checked",
    "refused",
    "importing",
    "imported",
    "failed",
)
RUNNING = (CHECKING, IMPORTING)


@dataclasses.dataclass(frozen=True)
class Uploads:
    folder: Path
    ttl: dt.timedelta = UPLOAD_TTL

    @classmethod
    def of(cls, app) -> Uploads:
        return cls(Path(app.instance_path) / "uploads")

    def create(self, data: bytes, *, kind: str, filename: str, user_id: int) -> str:
        """Keep a file for its check; return its token."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sweep()
        token = secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]
        _write_new(self.folder / f"{token}.csv", data)
        state = {
            "kind": kind,
            "filename": filename,
            "user_id": user_id,
            "state": CHECKING,
            "done": 0,
            "total": data.count(b"\n"),  # about the rows; the header and a last line
            "created_at": clock.now().isoformat(),
        }
        _write_new(self.folder / f"{token}.json", json.dumps(state).encode())
        return token

    def get(self, token: str, user_id: int | None = None) -> dict[str, Any] | None:
        """The upload's state; None when unknown, expired, or (given ``user_id``)
        another user's."""
        if not TOKEN.match(token):
            return None
        path = self.folder / f"{token}.json"
        try:
            state = json.loads(path.read_bytes())
            age = time.time() - path.stat().st_mtime  # file times are wall-clock
        except (OSError, ValueError):
            return None
        if age > self.ttl.total_seconds():
            return None
        if user_id is not None and state.get("user_id") != user_id:
            return None
        return {**state, "token": token}

    def update(self, token: str, **changes: Any) -> dict[str, Any]:
        """Change the state. One writer at a time: the web process until it enqueues a
        job, then that job until it ends."""
        state = self.get(token) or {}
        state.update(changes)
        state.pop("token", None)
        path = self.folder / f"{token}.json"
        partial = self.folder / f"{token}.{secrets.token_hex(8)}.partial"
        _write_new(partial, json.dumps(state).encode())
        os.replace(partial, path)  # readers see the old state or the new, never half
        return state

    def claim(self, token: str, user_id: int) -> dict[str, Any] | None:
        """Take a checked upload for its import: the rename lets one of two confirms
        (a double click, two tabs) have it. None when it is gone, another's, or not a
        file that passed its check."""
        state = self.get(token, user_id)
        if state is None or state["state"] != CHECKED or state["report"]["bad"]:
            return None
        try:
            (self.folder / f"{token}.csv").rename(self.folder / f"{token}.importing")
            os.utime(self.folder / f"{token}.importing")  # a fresh file for the sweep
        except OSError:
            return None
        return self.update(token, state=IMPORTING, done=0)

    def data(self, token: str, state: str) -> bytes:
        suffix = ".importing" if state == IMPORTING else ".csv"
        return (self.folder / f"{token}{suffix}").read_bytes()

    def finish(self, token: str, **changes: Any) -> None:
        """The upload is done with: the file goes; its state stays for the page, without
        the sample rows once imported (they hold names and phone numbers)."""
        for suffix in (".csv", ".importing"):
            (self.folder / f"{token}{suffix}").unlink(missing_ok=True)
        state = self.update(token, **changes)
        if state.get("state") == IMPORTED and state.get("report"):
            self.update(token, report={**state["report"], "sample": []})

    def sweep(self) -> None:
        """Delete what is past its time (run hourly, and at each upload)."""
        if not self.folder.is_dir():
            return
        oldest = time.time() - self.ttl.total_seconds()
        for path in self.folder.iterdir():
            try:
                if path.stat().st_mtime < oldest:
                    path.unlink()
            except OSError:
                continue  # another process swept it first


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def check(token: str) -> None:
    """Job: check every row, write nothing, record the report."""
    uploads = Uploads.of(current_app)
    state = _state(uploads, token)
    if state["state"] != CHECKING:
        return  # checked already by an earlier run of the job
    try:
        report = _run(uploads, token, state, write=False)
    except csv_import.CsvError as exc:
        uploads.finish(token, state=REFUSED, problem=str(exc))
        return
    finally:
        db.session.rollback()  # a check writes nothing
    uploads.update(token, state=CHECKED, report=_report(report), done=report.rows)
    if report.errors or not report.rows:
        uploads.finish(token)  # never imported: keep no personal data longer


def write(token: str, actor: str) -> None:
    """Job: import a checked file, a chunk a transaction (on SQLite one long
    transaction would hold every other writer off); the file is deleted either way."""
    uploads = Uploads.of(current_app)
    state = _state(uploads, token)
    if state["state"] != IMPORTING:
        return
    stored = 0

    def written(rows: int) -> None:
        nonlocal stored
        db.session.commit()
        stored += rows
        uploads.update(token, phase="writing", done=stored)

    try:
        report = _run(uploads, token, state, write=True, written=written)
    except Exception as exc:
        db.session.rollback()
        problem = f"{exc.__class__.__name__}: {exc}"[:500]
        uploads.finish(token, state=FAILED, problem=problem, written=stored)
        raise
    if report.errors:  # good at the check, but time moved on (events now in the future)
        db.session.rollback()
        uploads.finish(token, state=FAILED, report=_report(report))
        return
    count_import(state["kind"], report)
    audit.record(
        db.session,
        actor=actor,
        action=f"{state['kind']}.imported",
        target_type="csv_file",
        target_id=state["filename"][:128],
        details={"rows": report.rows, **report.stored},
        now=clock.now(),
    )
    db.session.commit()
    uploads.finish(token, state=IMPORTED, stored=report.stored, done=report.rows)


def _state(uploads: Uploads, token: str) -> dict[str, Any]:
    state = uploads.get(token)
    if state is None:
        # Fail the job, visibly: with web and workers on several machines the folder
        # must be shared.
        raise FileNotFoundError(f"no upload {token} in {uploads.folder} (expired, or not shared)")
    return state


def _run(
    uploads: Uploads,
    token: str,
    state: dict,
    *,
    write: bool,
    written: Callable[[int], None] = lambda n: None,
) -> csv_import.Report:
    text = csv_import.decode(uploads.data(token, state["state"]))
    done = 0

    def progress(rows: int) -> None:
        nonlocal done
        done += rows
        if done % PROGRESS_EVERY == 0:
            uploads.update(token, done=done)

    return run_import(state["kind"], text, write=write, progress=progress, written=written)


def run_import(
    kind: str,
    text: str,
    *,
    write: bool,
    progress: Callable[[int], None] = lambda n: None,
    written: Callable[[int], None] = lambda n: None,
) -> csv_import.Report:
    """Check a CSV text of members or events, and store it when ``write``, with this
    app's settings: what the import page's jobs and `flask --app wsgi import` run."""
    if kind == "members":
        return csv_import.import_members(
            db.session, text, now=clock.now(), write=write, progress=progress, written=written
        )
    settings = current_app.config["TENURE_SETTINGS"]
    return csv_import.import_events(
        db.session,
        text,
        now=clock.now(),
        write=write,
        default_currency=settings.currency,
        unknown_members=ingest.UnknownMembers(settings.unknown_members),
        progress=progress,
        written=written,
        clock=clock.now,
    )


def count_import(kind: str, report: csv_import.Report) -> None:
    """Count an events import on the Data in page (members are not counted there)."""
    if kind == "events":
        now = clock.now()
        csv_import.tally_import(db.session, report, day=clock.local_date(now), now=now)


def _report(report: csv_import.Report) -> dict[str, Any]:
    return {
        "rows": report.rows,
        "good": report.valid,
        "bad": len(report.errors),
        "errors": [
            {"line": e.line, "field": e.field, "message": e.message}
            for e in report.errors[:SHOWN_ERRORS]
        ],
        "sample": report.sample,
    }
