"""Stage rules through the API: read, replace with validation that names the field,
optimistic versions, a preview that saves nothing."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from members.audit import AuditEntry
from members.lifecycle import MemberFeatures
from members.member import Member
from members.programme import ProgrammeSetting
from tests import factories

URL = "/api/v1/settings/stage-rules"
DEFAULTS = {
    "new_days": 30,
    "new_max_orders": 1,
    "active_days": 30,
    "at_risk_days": 20,
    "at_risk_visit_percent": 50,
    "dormant_days": 30,
    "lapsed_days": 90,
    "vip_top_percent": 10,
    "precedence": ["vip", "at_risk", "active", "new", "dormant"],
    "vip_top_tier": False,
}


@pytest.fixture
def writer(session):
    return factories.bearer(factories.api_key(session, "read,write", name="crm")[1])


@pytest.fixture
def reader(session):
    return factories.bearer(factories.api_key(session, "read", name="bi")[1])


def _fields(response, status=422):
    """Field -> its messages, from a problem+json answer."""
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/problem+json"
    found: dict[str, list] = {}
    for error in response.get_json()["errors"]:
        found.setdefault(error["field"], []).append(error["message"])
    return found


def test_the_defaults_until_changed(client, reader):
    body = client.get(URL, headers=reader).get_json()
    assert body == {**DEFAULTS, "version": 0, "updated_at": None, "updated_by": None}


def test_a_change_is_saved_as_a_version_and_audited(client, writer, session):
    changed = {
        **DEFAULTS,
        "at_risk_days": 15,
        "precedence": ["at_risk", "vip", "active", "new", "dormant"],
    }
    response = client.put(URL, json=changed, headers=writer)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["at_risk_days"] == 15 and body["version"] == 1
    assert body["updated_by"].startswith("api_key:crm")
    assert client.get(URL, headers=writer).get_json()["precedence"][0] == "at_risk"
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "stage_rules.update"))
    assert entry.details["before"] is None and entry.details["after"]["at_risk_days"] == 15
    # What GET returns can be PUT back as it is: read-only fields are ignored.
    again = client.put(URL, json=body, headers=writer)
    assert again.status_code == 200 and again.get_json()["version"] == 1


def test_a_stale_version_is_refused(client, writer, session):
    first = {**DEFAULTS, "version": 0, "at_risk_days": 15}
    assert client.put(URL, json=first, headers=writer).status_code == 200
    stale = {**DEFAULTS, "version": 0, "at_risk_days": 10}
    response = client.put(URL, json=stale, headers=writer)
    assert response.status_code == 409
    assert "version 0 (now version 1)" in response.get_json()["detail"]
    assert client.get(URL, headers=writer).get_json()["at_risk_days"] == 15


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"dormant_days": 45}, "dormant_days", "would have no stage"),
        ({"new_days": -1}, "new_days", "greater than or equal to 0"),
        ({"active_days": "30"}, "active_days", "Not a whole number"),
        ({"vip_top_percent": True}, "vip_top_percent", "Not a whole number"),
        ({"lapsed_days": 20}, "lapsed_days", "deep end of dormant"),
        ({"precedence": ["vip", "active"]}, "precedence", "missing"),
        (
            {"precedence": ["vip", "at_risk", "active", "new", "sleepy"]},
            "precedence.4",
            "Must be one of",
        ),
        ({"colour": "red"}, "colour", "Unknown field"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_rules_are_422_naming_the_field_and_change_nothing(
    client, writer, session, changes, field, words
):
    response = client.put(URL, json={**DEFAULTS, **changes}, headers=writer)
    errors = _fields(response)
    assert field in errors
    assert words in str(errors[field])
    assert session.scalar(select(func.count()).select_from(ProgrammeSetting)) == 0


def test_a_missing_field_is_named(client, writer):
    body = {k: v for k, v in DEFAULTS.items() if k != "lapsed_days"}
    assert "lapsed_days" in _fields(client.put(URL, json=body, headers=writer))


def test_reading_needs_read_and_changing_needs_write(client, reader, session):
    assert client.get(URL).status_code == 401
    response = client.put(URL, json=DEFAULTS, headers=reader)
    assert response.status_code == 403
    assert "'write'" in response.get_json()["detail"]


def test_a_preview_counts_members_per_stage_and_saves_nothing(client, reader, session):
    at = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    for i, since in enumerate([1, 25, 40, 200, None]):
        member = Member(external_id=f"p-{i}", joined_at=at - dt.timedelta(days=300))
        session.add(member)
        session.flush()
        session.add(
            MemberFeatures(
                member_id=member.id,
                computed_at=at,
                days_since_last_order=since,
                days_since_joined=300,
            )
        )
    session.commit()
    response = client.post(
        f"{URL}/preview", json={**DEFAULTS, "vip_top_percent": 0}, headers=reader
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["members"] == {
        "new": 0,
        "active": 2,
        "at_risk": 0,
        "dormant": 1,
        "lapsed": 2,
        "vip": 0,
    }
    assert body["vip_spend_above"] is None
    wider = client.post(
        f"{URL}/preview",
        json={
            **DEFAULTS,
            "vip_top_percent": 0,
            "active_days": 60,
            "dormant_days": 60,
            "lapsed_days": 90,
        },
        headers=reader,
    )
    assert wider.get_json()["members"]["active"] == 3
    assert session.scalar(select(func.count()).select_from(ProgrammeSetting)) == 0
    assert "dormant_days" in _fields(
        client.post(f"{URL}/preview", json={**DEFAULTS, "dormant_days": 31}, headers=reader)
    )


LADDER = "/api/v1/settings/tier-ladder"


def test_the_tier_ladder_reads_replaces_and_names_bad_fields(client, writer, session):
    body = client.get(LADDER, headers=writer).get_json()
    assert [lv["name_zh"] for lv in body["levels"]] == ["银卡", "金卡", "钻石卡"]
    assert body["levels"][1]["min_spend"] == "2000.00" and body["version"] == 0
    body["levels"].append(
        {"key": "black", "name_zh": "黑钻", "name_en": "Black Diamond", "min_spend": 20000}
    )
    body["window_days"] = 90
    saved = client.put(LADDER, json=body, headers=writer)
    assert saved.status_code == 200, saved.get_json()
    assert saved.get_json()["version"] == 1 and len(saved.get_json()["levels"]) == 4
    assert saved.get_json()["levels"][3]["min_spend"] == "20000.00"

    flat = {**body, "version": 1}
    flat["levels"] = [dict(lv) for lv in body["levels"]]
    flat["levels"][3]["min_spend"] = "100"
    errors = _fields(client.put(LADDER, json=flat, headers=writer))
    assert "more than 8000.00" in errors["levels.3.min_spend"][0]
    flat["levels"][3]["min_spend"] = "lots"
    assert "levels.3.min_spend" in _fields(client.put(LADDER, json=flat, headers=writer))
    assert "window_days" in _fields(
        client.put(LADDER, json={**flat, "window_days": 60}, headers=writer)
    )
    assert "levels" in _fields(
        client.put(LADDER, json={**flat, "levels": flat["levels"][:2]}, headers=writer)
    )
    stale = client.put(LADDER, json={**body, "version": 0}, headers=writer)
    assert stale.status_code == 409
    assert client.get(LADDER, headers=writer).get_json()["version"] == 1


POINTS = "/api/v1/settings/points-rules"


def test_points_rules_read_replace_and_name_bad_fields(client, writer, session):
    body = client.get(POINTS, headers=writer).get_json()
    assert body["per_yuan"] == "1" and body["expiry_months"] == 12 and body["version"] == 0
    assert body["per_event"] == {"review": 10, "share": 5, "checkin": 1, "referral": 50}
    body["bonus_days"] = [
        {"day": "2026-11-11", "multiplier": 2},
        {"day": "2026-06-18", "multiplier": 2},
    ]
    body["per_yuan"] = "0.5"
    saved = client.put(POINTS, json=body, headers=writer)
    assert saved.status_code == 200, saved.get_json()
    assert [b["day"] for b in saved.get_json()["bonus_days"]] == ["2026-06-18", "2026-11-11"]
    assert saved.get_json()["per_yuan"] == "0.5"
    bad = {**body, "version": 1, "expiry_months": -1, "per_event": {"like": 3}}
    errors = _fields(client.put(POINTS, json=bad, headers=writer))
    assert "expiry_months" in errors and any(k.startswith("per_event") for k in errors)
    late = {**body, "version": 1, "bonus_days": [{"day": "2026-11-11", "multiplier": 11}]}
    assert "bonus_days.0.multiplier" in _fields(client.put(POINTS, json=late, headers=writer))
    assert client.get(POINTS, headers=writer).get_json()["version"] == 1
