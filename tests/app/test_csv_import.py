"""CSV import through the CLI: every bad row reported with its line; bad files change nothing."""

import pytest
from sqlalchemy import func, select

from members.event import Event
from members.member import Member


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


MEMBERS = (
    "external_id,phone,name,timezone,birthday,joined_at,attr.channel\n"
    "u-1,138 0013 8000,李娜,Asia/Shanghai,1990-05-20,2026-01-15T10:00:00+08:00,tmall\n"
    'u-2,,"王, 芳",,,,jd\n'
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_members_import_in_the_encodings_excel_writes(cli, session, tmp_path, encoding):
    path = _write(tmp_path, "m.csv", MEMBERS, encoding)
    result = cli.invoke(args=["import", "members", path])
    assert result.exit_code == 0, result.output
    assert "2 rows imported: 2 created, 0 updated" in result.output
    li = session.scalar(select(Member).where(Member.external_id == "u-1"))
    assert (li.phone, li.name, li.attributes) == ("+8613800138000", "李娜", {"channel": "tmall"})
    assert session.scalar(select(Member.name).where(Member.external_id == "u-2")) == "王, 芳"


def test_dry_run_reports_every_bad_row_and_writes_nothing(cli, session, tmp_path):
    text = MEMBERS + "u-3,12345,,,,,\nu-4,,,Mars/Base,,,\n,,,,,,\nu-6,,,,1990-02-30,,\n"
    result = cli.invoke(args=["import", "members", _write(tmp_path, "m.csv", text), "--dry-run"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert "line 4: phone: '12345' is not a valid phone number" in lines
    assert "line 5: timezone: 'Mars/Base' is not an IANA time zone (e.g. Asia/Shanghai)" in lines
    assert "line 6: external_id: is empty" in lines
    assert "line 7: birthday: '1990-02-30' is not YYYY-MM-DD" in lines
    assert lines[-1] == "Error: 4 of 6 rows are bad; nothing was imported"
    assert _count(session, Member) == 0


def test_a_good_dry_run_writes_nothing(cli, session, tmp_path):
    result = cli.invoke(args=["import", "members", _write(tmp_path, "m.csv", MEMBERS), "--dry-run"])
    assert result.exit_code == 0
    assert "2 rows checked, all good (dry run: nothing written)" in result.output
    assert _count(session, Member) == 0


def test_events_import_skips_duplicates_and_creates_members(cli, session, tmp_path):
    text = (
        "event_id,member,type,occurred_at,amount,currency,category,prop.store\n"
        "e-1,u-1,order,2026-11-01T10:00:00+08:00,199.00,CNY,美妆,南京西路店\n"
        "e-2,u-1,login,2026-11-02T10:00:00+08:00,,,,\n"
        "e-2,u-1,login,2026-11-02T10:00:00+08:00,,,,\n"
    )
    result = cli.invoke(args=["import", "events", _write(tmp_path, "e.csv", text)])
    assert result.exit_code == 0, result.output
    assert "3 rows imported: 2 accepted, 1 duplicate" in result.output
    order = session.scalar(select(Event).where(Event.event_id == "e-1"))
    assert order.properties == {"store": "南京西路店"} and order.category == "美妆"
    again = cli.invoke(args=["import", "events", _write(tmp_path, "e.csv", text)])
    assert "3 rows imported: 3 duplicate" in again.output
    assert _count(session, Event) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("event_id,member\n", "missing column(s): occurred_at, type"),
        ("event_id,member,type,occurred_at,colour\n", "unknown column(s): colour"),
    ],
)
def test_unreadable_files_are_one_line(cli, session, tmp_path, text, message):
    result = cli.invoke(args=["import", "events", _write(tmp_path, "e.csv", text)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_bad_event_rows_name_line_and_field(cli, session, tmp_path):
    text = (
        "event_id,member,type,occurred_at,amount\n"
        "e-1,u-1,order,2026-11-01T10:00:00,10\n"
        "e-2,u-1,order,2026-11-01T10:00:00+08:00,ten\n"
        "e-3,u-1,order,2026-11-01T10:00:00+08:00,-1\n"
    )
    result = cli.invoke(args=["import", "events", _write(tmp_path, "e.csv", text)])
    assert result.exit_code == 2
    assert "line 2: occurred_at: give a time zone offset" in result.stderr
    assert "line 3: amount: 'ten' is not a number" in result.stderr
    assert "line 4: amount: must be a number of 0 or more" in result.stderr
    assert _count(session, Event) == 0 and _count(session, Member) == 0


def test_a_missing_file_and_binary_garbage(cli, tmp_path):
    assert cli.invoke(args=["import", "members", str(tmp_path / "nope.csv")]).exit_code == 2
    garbage = tmp_path / "g.csv"
    garbage.write_bytes(bytes(range(256)) * 4)
    result = cli.invoke(args=["import", "members", str(garbage)])
    assert result.exit_code == 2
