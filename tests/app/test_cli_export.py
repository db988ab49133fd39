"""`flask --app wsgi export members`: the API's export, to a file or standard output."""

import csv
import io

import pytest

from members import profiles
from tests import factories

NOW = factories.NOW
MEMBERS = {
    "u-1": {
        "phone": "13800138000",
        "name": "李娜",
        "region": "上海",
        "joined_at": NOW.replace(month=1, day=15, hour=2),  # 10:00 in Shanghai
        "attributes": {"channel": "tmall"},
    },
    "u-2": {
        "name": "王, 芳",
        "region": "北京",
        "joined_at": NOW.replace(month=3, day=1, hour=1),
        "attributes": {"channel": "jd"},
    },
    "u-3": {"region": "上海", "joined_at": NOW.replace(month=2, day=28, hour=16)},  # 3-1 local
}


@pytest.fixture
def cli(app):
    return app.test_cli_runner()


@pytest.fixture
def members(session):
    for external_id, fields in MEMBERS.items():
        profiles.upsert(session, external_id, fields, NOW)
    session.commit()


def _api_export(app, session, query: str) -> bytes:
    _, secret = factories.api_key(session, "read")
    response = app.test_client().get(
        "/api/v1/members/export.csv" + query, headers=factories.bearer(secret)
    )
    assert response.status_code == 200
    return response.get_data()


def _ids(text: str) -> list[str]:
    return [row["external_id"] for row in csv.DictReader(io.StringIO(text))]


def test_export_to_a_file_is_the_api_export(app, cli, session, members, tmp_path):
    path = tmp_path / "out" / "members.csv"
    path.parent.mkdir()
    result = cli.invoke(args=["export", "members", "--region", "上海", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"Members written to {path}"
    assert result.stdout == ""
    data = path.read_bytes()
    assert data.startswith("\ufeff".encode())  # Excel reads the file as UTF-8
    assert data == _api_export(app, session, "?region=上海")
    assert _ids(data.decode("utf-8-sig")) == ["u-1", "u-3"]
    assert [p.name for p in path.parent.iterdir()] == ["members.csv"]  # no temporary left


def test_export_to_stdout_without_the_bom(app, cli, session, members):
    result = cli.invoke(args=["export", "members"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == _api_export(app, session, "").removeprefix("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["external_id"], r["phone"], r["name"]) for r in rows] == [
        ("u-1", "+8613800138000", "李娜"),
        ("u-2", "", "王, 芳"),
        ("u-3", "", ""),
    ]


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--attribute", "channel:jd"], ["u-2"]),
        # Whole days in the programme's time zone (Asia/Shanghai), the last one included.
        (["--joined-from", "2026-03-01"], ["u-2", "u-3"]),
        (["--joined-to", "2026-02-28"], ["u-1"]),
        (["--joined-from", "2026-03-01", "--joined-to", "2026-03-01", "--region", "上海"], ["u-3"]),
        (["--tier", "gold"], []),
        (["--stage", "vip"], []),
    ],
)
def test_export_filters(cli, members, args, ids):
    result = cli.invoke(args=["export", "members", *args])
    assert result.exit_code == 0, result.output
    assert _ids(result.stdout) == ids


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage", "sleepy"], "Error: Invalid value for '--stage': 'sleepy' is not one of"),
        (["--joined-from", "2026-13-01"], "Error: Invalid value for '--joined-from'"),
        (
            ["--joined-from", "2026-03-02", "--joined-to", "2026-03-01"],
            "Error: --joined-to: must not be before joined_from",
        ),
        (["--attribute", "channel"], "Error: --attribute: write key:value, not 'channel'"),
        (["--colour", "red"], "Error: No such option '--colour'."),
        (["-o", "{tmp}"], "is a directory"),
        (["-o", "{tmp}/missing/members.csv"], "Error: --output: cannot write "),
    ],
)
def test_bad_options_are_one_line_and_a_non_zero_exit(cli, members, tmp_path, args, message):
    result = cli.invoke(args=["export", "members", *(a.format(tmp=tmp_path) for a in args)])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.stdout == ""
