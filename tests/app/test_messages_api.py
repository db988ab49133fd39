"""The outbox through the API: filters, newest first, cursor pages, masked phones, and
the reason a policy gave."""

from __future__ import annotations

import datetime as dt

import pytest

from journeys.models import Message, MessageStatus
from members.member import Member
from tests import factories

URL = "/api/v1/messages"
AT = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)


@pytest.fixture
def reader(session):
    return factories.bearer(factories.api_key(session, "read", name="bi")[1])


def test_filters_pages_and_masks(client, reader, session):
    ann = Member(external_id="ann", phone="+8613800138000")
    bob = Member(external_id="bob")
    session.add_all([ann, bob])
    session.flush()
    for index in range(5):
        session.add(
            Message(
                member_id=ann.id if index < 4 else bob.id,
                channel="sms",
                provider="console",
                dedup_key=f"m:{index}",
                body=f"text {index}",
                status=MessageStatus.DEFERRED if index == 1 else MessageStatus.DELIVERED,
                reason="quiet_hours" if index == 1 else None,
                send_after=AT,
                created_at=AT,
            )
        )
    session.commit()
    first = client.get(URL, query_string={"member": "ann", "limit": 2}, headers=reader)
    page = first.get_json()
    assert [m["body"] for m in page["items"]] == ["text 3", "text 2"]
    assert page["items"][0]["phone"] != "+8613800138000" and page["items"][0]["phone"].endswith(
        "8000"
    )
    second = client.get(
        URL,
        query_string={"member": "ann", "limit": 2, "cursor": page["next_cursor"]},
        headers=reader,
    ).get_json()
    assert [m["body"] for m in second["items"]] == ["text 1", "text 0"]
    deferred = client.get(URL, query_string={"status": "deferred"}, headers=reader).get_json()
    assert [(m["body"], m["reason"]) for m in deferred["items"]] == [("text 1", "quiet_hours")]
    bad = client.get(URL, query_string={"cursor": "nonsense"}, headers=reader)
    assert bad.status_code == 422
