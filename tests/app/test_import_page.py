"""The import page as a marketer uses it: check a CSV file, see every bad row, import
only a good file; and the member export, the same file as the API's."""

import csv
import io
import os
import re
import time
from pathlib import Path

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from app.redis_client import get_redis
from app.uploads import SHOWN_ERRORS, UPLOAD_TTL
from app.web.forms import MAX_UPLOAD_BYTES
from members.audit import AuditEntry
from members.event import Event
from members.member import Member
from tests import factories
from workers import queues, runtime

MEMBERS = (
    "external_id,phone,name,timezone,region,joined_at,attr.channel\n"
    "u-1,138 0013 8000,李娜,Asia/Shanghai,上海,2026-01-15T10:00:00+08:00,tmall\n"
    'u-2,,"王, 芳",,北京,2026-03-01T09:00:00+08:00,jd\n'
)
EVENTS = (
    "event_id,member,type,occurred_at,amount,currency,category,prop.store\n"
    "e-1,u-1,order,2026-11-01T10:00:00+08:00,199.00,CNY,美妆,南京西路店\n"
    "e-2,u-1,login,2026-11-02T10:00:00+08:00,,,,\n"
    "e-2,u-1,login,2026-11-02T10:00:00+08:00,,,,\n"
)
_TOKEN = re.compile(r'action="/import/([A-Za-z0-9_-]{43})/confirm"')


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture(autouse=True)
def jobs_run_here(app):
    """Jobs run in this process, on the test's app, when _work() is called."""
    runtime.use_app(app)
    Queue(queues.DEFAULT, connection=get_redis(app)).empty()


def _work(client, response):
    """Run the job a page started, then show the page it sent the browser to."""
    if response.status_code != 303:
        return response
    SimpleWorker(
        [Queue(queues.DEFAULT, connection=get_redis(client.application))],
        connection=get_redis(client.application),
    ).work(burst=True)
    return client.get(response.headers["Location"])


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return client


def _upload(client, data: bytes, kind="members", name="members.csv", token=None):
    """Upload a file, run the job its check started, and show the page it leads to."""
    return _work(client, _post_file(client, data, kind, name, token))


def _post_file(client, data: bytes, kind="members", name="members.csv", token=None):
    # Encoded here, in memory: the test client spools a large body to a temporary file
    # that it never closes (a ResourceWarning, an error under this suite's settings).
    boundary, body = encode_multipart(
        {
            "csrf_token": token or factories.csrf_token(client, "/import"),
            "kind": kind,
            "file": FileStorage(io.BytesIO(data), name),
        }
    )
    return client.post(
        "/import", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )


def _confirm(client, token: str):
    csrf = factories.csrf_token(client, "/import")
    return _work(client, client.post(f"/import/{token}/confirm", data={"csrf_token": csrf}))


def _token(response) -> str:
    match = _TOKEN.search(response.get_data(as_text=True))
    assert match, "no import button on the page"
    return match.group(1)


def _uploads(app) -> set[Path]:
    folder = Path(app.instance_path) / "uploads"
    return set(folder.iterdir()) if folder.exists() else set()


def test_the_page_needs_a_signed_in_user(client):
    for path in ("/import", "/members/export.csv"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")


def test_the_nav_links_to_the_page(marketer):
    html = marketer.get("/").get_data(as_text=True)
    assert 'href="/import"' in html
    assert "Import" in html


def test_a_check_shows_every_bad_row_with_line_and_field_and_writes_nothing(app, marketer, session):
    before = _uploads(app)
    text = MEMBERS + "u-3,12345,,,,,\nu-4,,,Mars/Base,,,\n,,,,,,\n"
    response = _upload(marketer, text.encode())
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "5 rows of members: 2 good, 3 bad." in html
    rows = re.findall(
        r'<tr><td class="num">(\d+)</td><td><code>(\w+)</code></td><td>([^<]+)</td></tr>', html
    )
    assert rows == [
        ("4", "phone", "&#39;12345&#39; is not a valid phone number"),
        ("5", "timezone", "&#39;Mars/Base&#39; is not an IANA time zone (e.g. Asia/Shanghai)"),
        ("6", "external_id", "is empty"),
    ]
    assert "Nothing will be written while the file has bad rows" in html
    assert "/confirm" not in html
    assert _count(session, Member) == 0 and _count(session, AuditEntry) == 1  # the user
    # A file with bad rows is not kept; its state stays for the page.
    assert {p.suffix for p in _uploads(app) - before} == {".json"}


def test_a_good_file_shows_a_sample_then_imports_on_confirm(app, marketer, session):
    check = _upload(marketer, MEMBERS.encode(), name="会员 2026.csv")
    assert check.status_code == 200
    html = check.get_data(as_text=True)
    assert "2 rows of members: 2 good, 0 bad." in html
    assert "Import 2 rows" in html
    # The sample shows the values as they will be stored: the phone in E.164, in UTC.
    assert "<td>+8613800138000</td>" in html and "<td>2026-01-15T02:00:00+00:00</td>" in html
    assert "<th><code>attr.channel</code></th>" in html and "<td>王, 芳</td>" in html
    assert _count(session, Member) == 0  # a check writes nothing

    token = _token(check)
    stored = Path(app.instance_path) / "uploads" / f"{token}.csv"
    assert stored.read_bytes() == MEMBERS.encode()
    assert stored.stat().st_mode & 0o077 == 0  # personal data: the server's user only

    done = _confirm(marketer, token)
    assert done.status_code == 200
    assert "2 rows imported: 2 created, 0 updated." in done.get_data(as_text=True)
    li = session.scalar(select(Member).where(Member.external_id == "u-1"))
    assert (li.phone, li.name, li.attributes) == ("+8613800138000", "李娜", {"channel": "tmall"})
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "members.imported"))
    assert entry.actor == "user:marketer@shop.example"
    assert (entry.target_type, entry.target_id) == ("csv_file", "会员 2026.csv")
    assert entry.details == {"rows": 2, "created": 2, "updated": 0}
    assert not stored.exists()

    again = _confirm(marketer, token)  # a second click, or the back button
    assert again.status_code == 404
    assert "expired or was imported already" in again.get_data(as_text=True)
    assert _count(session, Member) == 2


def test_the_import_checks_every_row_again_and_writes_nothing_if_one_went_bad(
    app, marketer, session
):
    token = _token(_upload(marketer, MEMBERS.encode()))
    stored = Path(app.instance_path) / "uploads" / f"{token}.csv"
    stored.write_bytes(MEMBERS.encode() + b"u-3,12345,,,,,\n")  # changed behind the page
    response = _confirm(marketer, token)
    html = response.get_data(as_text=True)
    assert "nothing was imported" in html and "is not a valid phone number" in html
    assert "/confirm" not in html
    assert _count(session, Member) == 0
    assert not stored.exists()


def test_events_in_gb18030_as_chinese_excel_saves_them(app, marketer, session):
    check = _upload(marketer, EVENTS.encode("gb18030"), kind="events", name="events.csv")
    assert check.status_code == 200
    assert "<td>南京西路店</td>" in check.get_data(as_text=True)
    done = _confirm(marketer, _token(check))
    assert "3 rows imported: 2 accepted, 1 duplicate." in done.get_data(as_text=True)
    order = session.scalar(select(Event).where(Event.event_id == "e-1"))
    assert (order.category, order.properties) == ("美妆", {"store": "南京西路店"})
    assert session.scalar(select(AuditEntry.details).where(AuditEntry.action == "events.imported"))


def test_utf8_with_bom_is_read_like_without(marketer, session):
    check = _upload(marketer, MEMBERS.encode("utf-8-sig"))
    assert "2 rows of members: 2 good, 0 bad." in check.get_data(as_text=True)


def test_the_list_of_bad_rows_is_capped_and_says_how_many_more(marketer, session):
    bad = "".join(f"u-{i},12345,,,,,\n" for i in range(SHOWN_ERRORS + 25))
    response = _upload(marketer, (MEMBERS + bad).encode())
    html = response.get_data(as_text=True)
    assert html.count("is not a valid phone number") == SHOWN_ERRORS
    assert "… and 25 more bad rows not shown" in html


@pytest.mark.parametrize(
    ("data", "kind", "message"),
    [
        (b"", "members", "the file is empty"),
        (b"external_id,phone\n", "members", "The file has a header but no rows."),
        (b"event_id,member\ne-1,u-1\n", "events", "missing column(s): occurred_at, type"),
        (b"id,colour\n1,red\n", "members", "missing column(s): external_id"),
        ("external_id\nu-1\n".encode("utf-16"), "members", "neither UTF-8 nor GB18030"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "members", "contains NUL characters"),
        (b'external_id,name\nu-1,"' + b"x" * 200_000 + b"\n", "members", "quote left open"),
    ],
    ids=["empty", "header-only", "missing-columns", "wrong-header", "utf-16", "xlsx", "quote"],
)
def test_unreadable_files_are_a_form_message_and_400(app, marketer, session, data, kind, message):
    before = _uploads(app)
    response = _upload(marketer, data, kind=kind)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert 'class="error" role="alert"' in html
    assert message.replace("'", "&#39;") in html
    assert _count(session, Member) == 0 and _count(session, Event) == 0
    assert _uploads(app) == before


def test_no_file_or_no_kind_is_a_form_message(marketer):
    token = factories.csrf_token(marketer, "/import")
    response = marketer.post("/import", data={"csrf_token": token, "kind": "members"})
    assert response.status_code == 400
    assert "Choose a CSV file." in response.get_data(as_text=True)
    response = _upload(marketer, MEMBERS.encode(), kind="payments")
    assert response.status_code == 400


@pytest.mark.parametrize("extra", [1, 1024 * 1024], ids=["just-over", "far-over"])
def test_a_file_over_the_limit_is_refused_with_a_form_message(app, marketer, session, extra):
    data = MEMBERS.encode() + b"u-9,,,,,,\n" * ((MAX_UPLOAD_BYTES + extra) // 10)
    assert len(data) > MAX_UPLOAD_BYTES
    before = _uploads(app)
    response = _upload(marketer, data)
    assert response.status_code == 413
    html = response.get_data(as_text=True)
    assert "The file is larger than 20 MB" in html and "<form" in html
    assert _count(session, Member) == 0
    assert _uploads(app) == before


def test_the_check_needs_a_csrf_token(marketer, session):
    response = _upload(marketer, MEMBERS.encode(), token="forged")
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_an_analyst_sees_the_page_but_cannot_import(app, client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    token = _token(_upload(client, MEMBERS.encode()))
    client.post("/logout", data={"csrf_token": factories.csrf_token(client, "/import")})

    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    page = client.get("/import")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Your role can download members but not import" in html
    assert 'enctype="multipart/form-data"' not in html
    assert "Download CSV" in html
    assert _upload(client, MEMBERS.encode()).status_code == 403
    assert _confirm(client, token).status_code == 403
    assert _count(session, Member) == 0


@pytest.mark.parametrize("token", ["..%2F..%2Fsecret_key", "short", "A" * 43, "A" * 44])
def test_a_bad_token_imports_nothing(marketer, session, token):
    assert _confirm(marketer, token).status_code == 404
    assert marketer.get(f"/import/{token}").status_code == 404
    assert _count(session, Member) == 0


def test_another_users_upload_cannot_be_imported(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    token = _token(_upload(client, MEMBERS.encode()))
    client.post("/logout", data={"csrf_token": factories.csrf_token(client, "/import")})
    factories.user(session, "admin")
    factories.login(client, "admin@shop.example")
    assert client.get(f"/import/{token}").status_code == 404  # nor seen
    assert _confirm(client, token).status_code == 404
    assert _count(session, Member) == 0


def test_stale_uploads_expire_and_are_swept(app, marketer, session):
    old = _token(_upload(marketer, MEMBERS.encode()))
    folder = Path(app.instance_path) / "uploads"
    long_ago = time.time() - UPLOAD_TTL.total_seconds() - 60
    for path in folder.glob(f"{old}.*"):
        os.utime(path, (long_ago, long_ago))
    assert _confirm(marketer, old).status_code == 404
    assert _count(session, Member) == 0
    new = _token(_upload(marketer, MEMBERS.encode()))  # each upload sweeps the stale ones
    assert not list(folder.glob(f"{old}.*"))
    assert (folder / f"{new}.csv").exists()


# The export ------------------------------------------------------------------------


@pytest.fixture
def members(marketer, session):
    _confirm(marketer, _token(_upload(marketer, MEMBERS.encode())))
    assert _count(session, Member) == 2


def _rows(response):
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_export_is_the_api_export_with_the_same_filters(marketer, session, members):
    _, secret = factories.api_key(session, "read")
    page = marketer.get("/members/export.csv?region=上海&joined_from=2026-01-15&stage=")
    assert page.status_code == 200 and page.mimetype == "text/csv"
    assert page.headers["Content-Disposition"] == 'attachment; filename="members.csv"'
    rows = _rows(page)  # read to its end: a stream holds its request open until then
    api = marketer.get(
        "/api/v1/members/export.csv?region=上海&joined_after=2026-01-15T00:00:00%2B08:00",
        headers=factories.bearer(secret),
    )
    assert page.get_data() == api.get_data()
    assert [(r["external_id"], r["phone"], r["name"]) for r in rows] == [
        ("u-1", "+8613800138000", "李娜")
    ]
    assert rows[0]["attributes"] == '{"channel": "tmall"}'


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", ["u-1", "u-2"]),
        ("?attribute=channel:jd", ["u-2"]),
        # Days in the programme's time zone (Asia/Shanghai), the last one included.
        ("?joined_to=2026-01-15", ["u-1"]),
        ("?joined_to=2026-01-14", []),
        ("?joined_from=2026-03-01&joined_to=2026-03-01", ["u-2"]),
        ("?tier=gold", []),
        ("?stage=vip", []),
    ],
)
def test_export_filters(marketer, members, query, ids):
    response = marketer.get("/members/export.csv" + query)
    assert response.status_code == 200
    assert [r["external_id"] for r in _rows(response)] == ids


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?joined_from=2026-03-02&joined_to=2026-03-01", "must not be before joined_from"),
        ("?joined_from=yesterday", "Not a valid date value."),
        ("?stage=sleepy", "Not a valid choice."),
        ("?attribute=nocolon", "Write key:value"),
        ("?tier=" + "x" * 33, "Field cannot be longer than 32 characters."),
    ],
)
def test_bad_export_filters_are_a_form_message(marketer, session, query, message):
    response = marketer.get("/members/export.csv" + query)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert message in response.get_data(as_text=True)


def test_an_analyst_may_export(client, session, members):
    client.post("/logout", data={"csrf_token": factories.csrf_token(client, "/import")})
    factories.user(session, "analyst")
    factories.login(client, "analyst@shop.example")
    assert len(_rows(client.get("/members/export.csv"))) == 2


def test_the_page_shows_progress_until_a_worker_has_checked_the_file(marketer, session):
    started = _post_file(marketer, MEMBERS.encode())
    assert started.status_code == 303
    waiting = marketer.get(started.headers["Location"]).get_data(as_text=True)
    assert "Checking the rows: nothing is written yet." in waiting
    assert '<meta http-equiv="refresh" content="2">' in waiting and "<progress" in waiting
    checked = _work(marketer, started).get_data(as_text=True)
    assert "2 rows of members: 2 good, 0 bad." in checked
    assert 'http-equiv="refresh"' not in checked


def test_a_job_that_dies_shows_as_failed_not_as_checking_forever(app, marketer, session):
    started = _post_file(marketer, MEMBERS.encode())
    token = started.headers["Location"].rsplit("/", 1)[1]
    (Path(app.instance_path) / "uploads" / f"{token}.csv").unlink()  # the job will fail
    page = _work(marketer, started).get_data(as_text=True)
    assert "The import failed and nothing was written" in page
    assert "stopped before the end" in page and 'http-equiv="refresh"' not in page
    assert _count(session, Member) == 0


def test_an_events_import_is_counted_on_the_data_in_page(marketer, session):
    _confirm(marketer, _token(_upload(marketer, EVENTS.encode(), kind="events")))
    html = marketer.get("/data-in").get_data(as_text=True)
    row = re.search(
        r"<td>CSV</td>\s*<td class=\"num\">(\d+)</td>\s*<td class=\"num\">(\d+)</td>", html
    )
    assert row and row.groups() == ("2", "1")  # accepted, duplicate


def test_an_import_that_stops_half_way_says_what_was_written(app, marketer, session, monkeypatch):
    from members import profiles

    token = _token(_upload(marketer, MEMBERS.encode()))
    apply = profiles._apply

    def fail_on_the_second(session_, member, external_id, clean, now):
        if external_id == "u-2":
            raise RuntimeError("the disk is full")
        return apply(session_, member, external_id, clean, now)

    monkeypatch.setattr(profiles, "UPSERT_CHUNK", 1)
    monkeypatch.setattr(profiles, "_apply", fail_on_the_second)
    html = _confirm(marketer, token).get_data(as_text=True)
    assert "The import stopped after 1 rows were written: RuntimeError: the disk is full" in html
    assert "Importing the same file again is safe" in html
    assert session.scalars(select(Member.external_id)).all() == ["u-1"]
