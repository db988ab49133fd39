"""Members through /api/v1/members as a shop's engineer pushes and reads them."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from members.member import ConsentRecord, Member
from tests import factories


@pytest.fixture
def ingest(session):
    return factories.bearer(factories.api_key(session, "ingest,read")[1])


def _problem_fields(response, status=422):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return {e["field"] for e in response.get_json()["errors"]}


def test_upsert_creates_then_updates_and_normalises(client, ingest):
    body = {
        "external_id": "u-1",
        "phone": "138 0013 8000",
        "name": "李娜",
        "timezone": "Asia/Shanghai",
        "birthday": "1990-05-20",
        "joined_at": "2026-01-15T10:00:00+08:00",
        "attributes": {"channel": "tmall"},
    }
    created = client.post("/api/v1/members", json=body, headers=ingest)
    assert created.status_code == 201
    member = created.get_json()
    assert member["phone"] == "+8613800138000"
    assert member["joined_at"] == "2026-01-15T02:00:00+00:00"
    assert member["consent"] == {
        "sms": False,
        "push": False,
        "email": False,
        "webhook": False,
        "cross_border": False,
        "personalised_marketing": True,
    }
    updated = client.post(
        "/api/v1/members",
        json={"external_id": "u-1", "region": "上海", "attributes": {"vip_card": "yes"}},
        headers=ingest,
    )
    assert updated.status_code == 200
    again = updated.get_json()
    assert again["name"] == "李娜" and again["region"] == "上海"
    assert again["attributes"] == {"channel": "tmall", "vip_card": "yes"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "u-2", "phone": "010 6552 9988"}, "phone"),
        ({"external_id": "u-2", "phone": "12345"}, "phone"),
        ({"external_id": "u-2", "timezone": "Mars/Olympus"}, "timezone"),
        ({"external_id": "u-2", "joined_at": "2026-01-15T10:00:00"}, "joined_at"),
        ({"external_id": "u-2", "joined_at": "yesterday"}, "joined_at"),
        ({"external_id": "u-2", "birthday": "1990-13-45"}, "birthday"),
        ({"external_id": "", "name": "x"}, "external_id"),
        ({"name": "x"}, "external_id"),
        ({"external_id": "u-2", "tier": "gold"}, "tier"),
        ({"external_id": 7}, "external_id"),
    ],
)
def test_bad_member_fields_are_422_naming_the_field_and_store_nothing(
    client, session, ingest, body, field
):
    assert field in _problem_fields(client.post("/api/v1/members", json=body, headers=ingest))
    assert session.scalar(select(func.count()).select_from(Member)) == 0


def test_batch_stores_the_good_items_and_names_the_bad(client, session, ingest):
    members = [{"external_id": f"b-{i}", "phone": f"1380013800{i}"} for i in range(3)]
    members.append({"external_id": "b-bad", "phone": "nope"})
    members.append({"name": "no id"})
    response = client.post("/api/v1/members/batch", json={"members": members}, headers=ingest)
    assert response.status_code == 200
    body = response.get_json()
    assert body["counts"] == {"created": 3, "updated": 0, "rejected": 2}
    assert body["results"][3]["errors"][0]["field"] == "phone"
    assert body["results"][4]["errors"][0]["field"] == "external_id"
    assert session.scalar(select(func.count()).select_from(Member)) == 3


def test_a_batch_of_1001_is_refused_whole(client, session, ingest):
    members = [{"external_id": f"b-{i}"} for i in range(1001)]
    response = client.post("/api/v1/members/batch", json={"members": members}, headers=ingest)
    assert "members" in _problem_fields(response)
    assert session.scalar(select(func.count()).select_from(Member)) == 0


def test_get_one_and_patch(client, ingest):
    client.post("/api/v1/members", json={"external_id": "u-9"}, headers=ingest)
    got = client.get("/api/v1/members/u-9", headers=ingest)
    assert got.status_code == 200 and got.get_json()["last_events"] == []
    patched = client.patch(
        "/api/v1/members/u-9", json={"timezone": "Europe/Berlin"}, headers=ingest
    )
    assert patched.get_json()["timezone"] == "Europe/Berlin"
    assert client.get("/api/v1/members/nobody", headers=ingest).status_code == 404
    assert client.patch("/api/v1/members/nobody", json={}, headers=ingest).status_code == 404


def test_list_filters_and_walks_pages_with_a_cursor(client, ingest):
    for i in range(7):
        client.post(
            "/api/v1/members",
            headers=ingest,
            json={
                "external_id": f"l-{i}",
                "region": "上海" if i % 2 else "北京",
                "joined_at": f"2026-0{1 + i}-01T00:00:00+08:00",
                "attributes": {"channel": "tmall" if i < 3 else "jd"},
            },
        )
    seen, cursor = [], None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/members", query_string=query, headers=ingest).get_json()
        seen += [m["external_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"l-{i}" for i in range(7)]
    shanghai = client.get("/api/v1/members?region=上海&attribute=channel:jd", headers=ingest)
    assert [m["external_id"] for m in shanghai.get_json()["items"]] == ["l-3", "l-5"]
    joined = client.get(
        "/api/v1/members",
        headers=ingest,
        query_string={
            "joined_after": "2026-03-01T00:00:00+08:00",
            "joined_before": "2026-05-01T00:00:00+08:00",
        },
    )
    assert [m["external_id"] for m in joined.get_json()["items"]] == ["l-2", "l-3"]
    for bad in (
        "cursor=!!!",
        "limit=0",
        "stage=sleepy",
        "attribute=nocolon",
        "joined_after=2026-01-01",
    ):
        assert client.get(f"/api/v1/members?{bad}", headers=ingest).status_code == 422, bad


def test_consent_is_logged_per_channel(client, session, ingest):
    client.post("/api/v1/members", json={"external_id": "c-1"}, headers=ingest)
    granted = client.post(
        "/api/v1/members/c-1/consent",
        headers=ingest,
        json={"channels": {"sms": True, "push": True}, "source": "signup_form"},
    )
    assert granted.get_json()["consent"]["sms"] is True
    withdrawn = client.post(
        "/api/v1/members/c-1/consent",
        headers=ingest,
        json={"channels": {"sms": False}, "source": "sms_reply_R", "note": "拒收"},
    )
    assert withdrawn.get_json()["consent"] == {
        "sms": False,
        "push": True,
        "email": False,
        "webhook": False,
        "cross_border": False,
        "personalised_marketing": True,
    }
    log = session.scalars(select(ConsentRecord).order_by(ConsentRecord.id)).all()
    assert [(r.channel, r.granted, r.source) for r in log] == [
        ("sms", True, "signup_form"),
        ("push", True, "signup_form"),
        ("sms", False, "sms_reply_R"),
    ]
    bad = client.post(
        "/api/v1/members/c-1/consent",
        headers=ingest,
        json={"channels": {"fax": True}, "source": "x"},
    )
    assert _problem_fields(bad) == {"channels.fax.key"}
    assert (
        client.post(
            "/api/v1/members/nobody/consent",
            headers=ingest,
            json={"channels": {"sms": True}, "source": "x"},
        ).status_code
        == 404
    )


def test_reading_needs_read_and_writing_needs_ingest(client, session):
    _, reader = factories.api_key(session, "read", name="reader")
    _, pusher = factories.api_key(session, "ingest", name="pusher")
    assert (
        client.post(
            "/api/v1/members", json={"external_id": "s-1"}, headers=factories.bearer(reader)
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/members", json={"external_id": "s-1"}, headers=factories.bearer(pusher)
        ).status_code
        == 201
    )
    assert client.get("/api/v1/members/s-1", headers=factories.bearer(pusher)).status_code == 403
    assert client.get("/api/v1/members/s-1", headers=factories.bearer(reader)).status_code == 200


def test_timestamps_keep_their_instant_through_the_api(client, ingest):
    shanghai = dt.datetime(2026, 11, 23, 21, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    client.post(
        "/api/v1/members",
        json={"external_id": "t-1", "joined_at": shanghai.isoformat()},
        headers=ingest,
    )
    back = client.get("/api/v1/members/t-1", headers=ingest).get_json()["joined_at"]
    assert dt.datetime.fromisoformat(back) == shanghai


def test_erasure_wipes_personal_data_and_late_events_cannot_bring_it_back(client, session, ingest):
    from members.audit import AuditEntry
    from members.event import Event

    client.post(
        "/api/v1/members",
        headers=ingest,
        json={
            "external_id": "p-1",
            "phone": "13800138000",
            "name": "王芳",
            "birthday": "1988-03-08",
            "attributes": {"wechat": "wf88"},
            "region": "杭州",
        },
    )
    client.post(
        "/api/v1/members/p-1/consent",
        headers=ingest,
        json={"channels": {"sms": True}, "source": "signup"},
    )
    client.post(
        "/api/v1/events",
        headers=ingest,
        json={
            "events": [
                {
                    "event_id": "p-e1",
                    "member": "p-1",
                    "type": "order",
                    "amount": "99",
                    "occurred_at": "2026-11-01T10:00:00+08:00",
                    "properties": {"address": "西湖区..."},
                }
            ]
        },
    )
    assert client.delete("/api/v1/members/p-1", headers=ingest).status_code == 204
    assert client.delete("/api/v1/members/p-1", headers=ingest).status_code == 204  # idempotent
    erased = session.scalar(select(Member).where(Member.external_id == "p-1"))
    session.refresh(erased)
    assert (erased.phone, erased.name, erased.birthday, erased.attributes) == (None, None, None, {})
    assert erased.consent_sms is False and erased.erased_at is not None
    assert erased.region == "杭州"  # coarse, kept for aggregates
    event = session.scalar(select(Event).where(Event.event_id == "p-e1"))
    session.refresh(event)
    assert event.properties == {} and event.amount == 99
    entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "member.erased"))
    assert len(list(entries)) == 1
    late = client.post(
        "/api/v1/events",
        headers=ingest,
        json={
            "events": [
                {
                    "event_id": "p-e2",
                    "member": "p-1",
                    "type": "login",
                    "occurred_at": "2026-11-02T10:00:00+08:00",
                }
            ]
        },
    ).get_json()
    assert late["results"][0]["status"] == "rejected"
    assert late["results"][0]["errors"][0]["field"] == "member"
    assert client.get("/api/v1/members", headers=ingest).get_json()["items"] == []
    refused = client.post(
        "/api/v1/members/p-1/consent",
        headers=ingest,
        json={"channels": {"sms": True}, "source": "x"},
    )
    assert "member" in _problem_fields(refused)
    back = client.post("/api/v1/members", headers=ingest, json={"external_id": "p-1"})
    assert back.status_code == 200 and back.get_json()["erased_at"] is None
    assert back.get_json()["consent"]["sms"] is False


def test_export_streams_the_filtered_members_as_csv(client, ingest):
    import csv
    import io

    for i in range(5):
        client.post(
            "/api/v1/members",
            headers=ingest,
            json={
                "external_id": f"x-{i}",
                "name": f"会员{i}",
                "region": "上海" if i % 2 else "北京",
                "attributes": {"n": i},
            },
        )
    client.delete("/api/v1/members/x-3", headers=ingest)
    response = client.get("/api/v1/members/export.csv?region=上海", headers=ingest)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert [(r["external_id"], r["name"]) for r in rows] == [("x-1", "会员1")]
    assert rows[0]["attributes"] == '{"n": 1}'
    assert client.get("/api/v1/members/export.csv?limit=0", headers=ingest).status_code == 422
