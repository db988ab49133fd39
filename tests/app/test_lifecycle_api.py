"""Stage history, flows and runs through the API, as a dashboard or a BI tool reads them."""

import datetime as dt

import pytest

from members import lifecycle_run
from members.member import Member
from tests import factories

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def reader(app, session):
    app.config["TENURE_CLOCK"] = lambda: T0 + dt.timedelta(days=1)
    return factories.bearer(factories.api_key(session, "read", name="bi")[1])


@pytest.fixture
def two_runs(session):
    for i in range(3):
        session.add(Member(external_id=f"m-{i}", joined_at=T0 - dt.timedelta(days=10)))
    session.flush()
    lifecycle_run.run(session, now=T0, full=True)
    # A day later one more member joins, and the others have been members 40 days.
    session.add(Member(external_id="m-new", joined_at=T0 + dt.timedelta(days=1)))
    session.flush()
    lifecycle_run.run(session, now=T0 + dt.timedelta(days=30), full=True)
    session.commit()


def test_stage_history_per_day(client, reader, two_runs):
    response = client.get(
        "/api/v1/lifecycle/stage-history?from=2026-11-22&to=2026-11-24", headers=reader
    )
    assert response.status_code == 200, response.get_json()
    days = response.get_json()["days"]
    assert [d["day"] for d in days] == ["2026-11-22", "2026-11-23", "2026-11-24"]
    assert days[0]["members"]["new"] == 0
    assert days[1]["members"] == {
        "new": 3,
        "active": 0,
        "at_risk": 0,
        "dormant": 0,
        "lapsed": 0,
        "vip": 0,
    }
    assert days[2]["members"] == days[1]["members"]  # no run that day: carried
    later = client.get(
        "/api/v1/lifecycle/stage-history?from=2026-12-23&to=2026-12-23", headers=reader
    ).get_json()["days"]
    assert later[0]["members"]["dormant"] == 3 and later[0]["members"]["new"] == 1


def test_the_default_range_is_the_last_30_days(client, reader, two_runs):
    days = client.get("/api/v1/lifecycle/stage-history", headers=reader).get_json()["days"]
    assert len(days) == 30 and days[-1]["day"] == "2026-11-24"


def test_flows_per_week(client, reader, two_runs):
    response = client.get(
        "/api/v1/lifecycle/transitions?from=2026-11-01&to=2026-12-31", headers=reader
    )
    flows = response.get_json()["flows"]
    assert {"week": "2026-11-23", "from": None, "to": "new", "members": 3} in flows
    assert {"week": "2026-12-21", "from": "new", "to": "dormant", "members": 3} in flows
    assert {"week": "2026-12-21", "from": None, "to": "new", "members": 1} in flows


def test_runs_newest_first(client, reader, two_runs):
    runs = client.get("/api/v1/lifecycle/runs?limit=5", headers=reader).get_json()
    assert [r["kind"] for r in runs] == ["full", "full"]
    assert runs[0]["changed"] == 4 and runs[1]["changed"] == 3
    assert runs[0]["as_of"].startswith("2026-12-23")


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("from=2026-11-24&to=2026-11-01", "from", "after"),
        ("from=2025-01-01&to=2026-11-24", "from", "at most 400 days"),
        ("from=yesterday", "from", "Not a valid date"),
    ],
    ids=["reversed", "too-long", "words"],
)
def test_bad_ranges_name_the_parameter(client, reader, query, field, words):
    response = client.get(f"/api/v1/lifecycle/stage-history?{query}", headers=reader)
    assert response.status_code == 422
    errors = {e["field"]: e["message"] for e in response.get_json()["errors"]}
    assert field in errors and words in str(errors[field])


def test_history_needs_an_api_key(client):
    assert client.get("/api/v1/lifecycle/stage-history").status_code == 401
