"""The audit log page: who changed what, newest first, paginated."""

from __future__ import annotations

from flask import render_template, request
from flask_login import login_required
from sqlalchemy import func, select

from app.extensions import db
from app.web import bp
from members.audit import AuditEntry

PAGE_SIZE = 50


@bp.get("/audit")
@login_required
def audit_log():
    total = db.session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(max(request.args.get("page", 1, type=int), 1), pages)
    entries = db.session.scalars(
        select(AuditEntry)
        .order_by(AuditEntry.id.desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    ).all()
    return render_template("audit.html", entries=entries, page=page, pages=pages, total=total)
