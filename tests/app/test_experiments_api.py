"""Experiments through the API as a shop's engineer uses them: create, start, assign
(with the benefit package granted once), import hand-run assignments, read results as
JSON and CSV; every refusal a 4xx naming the field, with nothing stored."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from experiments.models import Assignment, Experiment, Exposure
from members.audit import AuditEntry
from members.event import Event
from members.loyalty import BenefitGrant
from members.member import Member
from tests import factories

URL = "/api/v1/experiments"
NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
BODY = {
    "key": "pack",
    "name": "Service vs discount",
    "variants": [
        {
            "key": "discount",
            "weight": 50,
            "control": True,
            "benefits": [{"benefit": "coupon", "value": 30, "threshold": 199}],
        },
        {
            "key": "service",
            "weight": 50,
            "benefits": [{"benefit": "service", "service": "advisor_callback", "cost": 15}],
        },
    ],
    "holdout": 10,
}


@pytest.fixture
def writer(session):
    return factories.bearer(factories.api_key(session, "read,write", name="crm")[1])


@pytest.fixture(autouse=True)
def fixed_clock(app):
    app.config["TENURE_CLOCK"] = lambda: NOW


def _fields(response, status=422):
    assert response.status_code == status, response.get_json()
    found: dict[str, list] = {}
    for error in response.get_json()["errors"]:
        found.setdefault(error["field"], []).append(error["message"])
    return found


def _members(session, count, joined=NOW - dt.timedelta(days=400)):
    session.execute(
        Member.__table__.insert(),
        [{"external_id": f"u-{i}", "joined_at": joined} for i in range(count)],
    )
    session.commit()


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_create_start_assign_grants_the_package_once(client, session, writer):
    _members(session, 3)
    created = client.post(URL, json=BODY, headers=writer)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["status"] == "draft"
    assert (
        client.post(f"{URL}/pack/assign", json={"member": "u-1"}, headers=writer).status_code == 409
    )
    started = client.post(f"{URL}/pack/start", json={}, headers=writer)
    assert started.get_json()["status"] == "running"
    first = client.post(f"{URL}/pack/assign", json={"member": "u-1"}, headers=writer).get_json()
    again = client.post(f"{URL}/pack/assign", json={"member": "u-1"}, headers=writer).get_json()
    assert first["new"] and not again["new"]
    assert first["variant"] == again["variant"] and first["assigned_at"] == again["assigned_at"]
    granted = _count(session, BenefitGrant)
    if first["variant"] == "holdout":
        assert first["benefits"] == [] and granted == 0
    else:
        assert first["granted"] == 1 and again["granted"] == 0 and granted == 1
        assert _count(session, Exposure) == 1
    shown = client.get(f"{URL}/pack", headers=writer).get_json()
    assert sum(shown["assigned"].values()) == 1
    actions = session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == "pack"))
    assert {"experiment.create", "experiment.start"} <= set(actions)


def test_assignment_is_the_same_bucket_on_any_machine(client, session, writer):
    _members(session, 200)
    client.post(URL, json=BODY, headers=writer)
    client.post(f"{URL}/pack/start", headers=writer)
    variants = {}
    for i in range(200):
        answer = client.post(
            f"{URL}/pack/assign", json={"member": f"u-{i}", "grant": False}, headers=writer
        )
        variants[f"u-{i}"] = answer.get_json()["variant"]
    from experiments.assignment import bucket, variant_for

    experiment = session.scalar(select(Experiment).where(Experiment.key == "pack"))
    for external_id, variant in variants.items():
        owner = variant_for(experiment, bucket(experiment.salt, external_id))
        assert variant == (owner.key if owner else "holdout")
    assert 5 <= list(variants.values()).count("holdout") <= 40  # 10% of 200
    assert _count(session, BenefitGrant) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["variants"][0].update(weight=40), "variants"),
        (lambda b: b.update(holdout=60), "holdout"),
        (lambda b: b["variants"][1].update(control=True), "variants"),
        (lambda b: b.update(primary_metric="happiness"), "primary_metric"),
        (lambda b: b.update(guardrail_metrics=["retention_90d", "nps"]), "guardrail_metrics"),
        (lambda b: b.update(audience="stage = "), "audience"),
        (lambda b: b["variants"][1].update(key="holdout"), "variants.1.key"),
        (
            lambda b: b["variants"][0]["benefits"][0].update(value=None),
            "variants.0.benefits.0.value",
        ),
        (lambda b: b.update(design={"mode": "bayesian"}), "design.mode"),
    ],
)
def test_a_bad_design_names_the_field_and_stores_nothing(client, session, writer, change, field):
    body = copy.deepcopy(BODY)
    change(body)
    assert field in _fields(client.post(URL, json=body, headers=writer))
    assert _count(session, Experiment) == 0


def test_a_running_experiment_keeps_its_split(client, session, writer):
    client.post(URL, json=BODY, headers=writer)
    client.post(f"{URL}/pack/start", headers=writer)
    variants = copy.deepcopy(BODY["variants"])
    variants[0]["weight"], variants[1]["weight"] = 70, 30
    refused = client.patch(f"{URL}/pack", json={"variants": variants}, headers=writer)
    assert "variants" in _fields(refused)
    assert "holdout" in _fields(client.patch(f"{URL}/pack", json={"holdout": 20}, headers=writer))
    renamed = client.patch(f"{URL}/pack", json={"name": "Packages"}, headers=writer)
    assert renamed.status_code == 200
    weights = [
        v["weight"] for v in client.get(f"{URL}/pack", headers=writer).get_json()["variants"]
    ]
    assert weights == [50, 50]
    assert client.post(f"{URL}/pack/stop", headers=writer).status_code == 200
    assert client.post(f"{URL}/pack/start", headers=writer).status_code == 409


def test_import_assignments_json_and_csv(client, session, writer):
    _members(session, 4)
    client.post(URL, json=BODY, headers=writer)
    rows = [
        {"member": "u-0", "variant": "discount", "assigned_at": "2026-03-01T10:00:00+08:00"},
        {"member": "u-1", "variant": "holdout", "assigned_at": "2026-03-02T00:00:00Z"},
    ]
    done = client.post(f"{URL}/pack/assignments", json={"assignments": rows}, headers=writer)
    assert done.status_code == 201, done.get_json()
    assert done.get_json()["assigned"] == {"discount": 1, "service": 0, "holdout": 1}
    text = "member,variant,assigned_at\nu-2,service,2026-03-03T09:30:00+08:00\n"
    done = client.post(
        f"{URL}/pack/assignments",
        data=text.encode(),
        headers={**writer, "Content-Type": "text/csv"},
    )
    assert done.status_code == 201, done.get_json()
    recorded = session.scalar(
        select(Assignment.assigned_at).join(Member).where(Member.external_id == "u-0")
    )
    assert recorded.replace(tzinfo=dt.UTC) == dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
    started = client.get(f"{URL}/pack", headers=writer).get_json()["started_at"]
    assert started.startswith("2026-03-01T02:00")


@pytest.mark.parametrize(
    ("rows", "field"),
    [
        (
            [{"member": "nobody", "variant": "discount", "assigned_at": "2026-03-01T00:00:00Z"}],
            "assignments.1.member",
        ),
        (
            [{"member": "u-0", "variant": "service", "assigned_at": "2026-03-01T00:00:00Z"}],
            "assignments.1.member",
        ),
        (
            [{"member": "u-1", "variant": "discount", "assigned_at": "2026-03-01T10:00:00"}],
            "assignments.1.assigned_at",
        ),
        (
            [{"member": "u-1", "variant": "gold", "assigned_at": "2026-03-01T00:00:00Z"}],
            "assignments.1.variant",
        ),
        (
            [{"member": "u-1", "variant": "discount", "assigned_at": "2027-03-01T00:00:00Z"}],
            "assignments.1.assigned_at",
        ),
    ],
)
def test_a_bad_import_names_the_row_and_stores_nothing(client, session, writer, rows, field):
    _members(session, 3)
    client.post(URL, json=BODY, headers=writer)
    good = {"member": "u-0", "variant": "discount", "assigned_at": "2026-03-01T00:00:00Z"}
    answer = client.post(
        f"{URL}/pack/assignments", json={"assignments": [good, *rows]}, headers=writer
    )
    assert field in _fields(answer)
    assert _count(session, Assignment) == 0


def test_an_import_naming_a_member_already_assigned_is_refused(client, session, writer):
    _members(session, 2)
    client.post(URL, json=BODY, headers=writer)
    row = {"member": "u-0", "variant": "discount", "assigned_at": "2026-03-01T00:00:00Z"}
    client.post(f"{URL}/pack/assignments", json={"assignments": [row]}, headers=writer)
    answer = client.post(f"{URL}/pack/assignments", json={"assignments": [row]}, headers=writer)
    assert "assignments.0.member" in _fields(answer)
    assert _count(session, Assignment) == 1


def _orders(session, external_id, *moments, amount=100):
    member_id = session.scalar(select(Member.id).where(Member.external_id == external_id))
    session.execute(
        Event.__table__.insert(),
        [
            {
                "event_id": f"{external_id}-{i}",
                "member_id": member_id,
                "type": "order",
                "occurred_at": at,
                "amount": Decimal(amount),
                "properties": {},
            }
            for i, at in enumerate(moments)
        ],
    )
    session.commit()


def test_results_as_json_and_csv(client, session, writer):
    _members(session, 60)
    client.post(URL, json=BODY, headers=writer)
    start = NOW - dt.timedelta(days=120)
    rows = [
        {
            "member": f"u-{i}",
            "variant": ("discount", "service", "holdout")[i % 3],
            "assigned_at": (start + dt.timedelta(hours=i)).isoformat(),
        }
        for i in range(60)
    ]
    client.post(f"{URL}/pack/assignments", json={"assignments": rows}, headers=writer)
    for i in range(0, 60, 2):
        _orders(session, f"u-{i}", start + dt.timedelta(days=20, hours=i))
    answer = client.get(f"{URL}/pack/results", headers=writer)
    assert answer.status_code == 200, answer.get_json()
    found = answer.get_json()
    service = found["variants"]["service"]
    assert service["n"] == 20
    cell = service["metrics"]["retention_30d"]
    assert set(cell) >= {"control", "value", "abs_lift", "abs_ci", "rel_lift", "rel_ci"}
    assert (cell["n"], cell["n_control"]) == (20, 20)
    assert cell["value"] == pytest.approx(0.5) and cell["control"] == pytest.approx(0.5)
    assert found["srm"]["ok"] in (True, False) and "p_value" in found["srm"]
    holdout = found["holdout"]["variants"]["service"]["metrics"]["retention_30d"]
    assert holdout["n_control"] == 20
    assert found["verdict"]
    # the same figures as CSV
    text = client.get(f"{URL}/pack/results?format=csv", headers=writer).get_data(as_text=True)
    table = list(csv.DictReader(io.StringIO(text)))
    row = next(
        r
        for r in table
        if r["variant"] == "service"
        and r["metric"] == "retention_30d"
        and r["against"] == "control"
    )
    assert float(row["value"]) == pytest.approx(cell["value"])
    # as it stood 20 days after the first assignment: no 30-day window has elapsed
    early = (start + dt.timedelta(days=20)).isoformat()
    found = client.get(
        f"{URL}/pack/results", query_string={"as_of": early}, headers=writer
    ).get_json()
    assert found["variants"]["service"]["metrics"]["retention_30d"]["n"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"as_of": "2025-01-01T00:00:00Z"}, "as_of"),
        ({"as_of": "2026-03-01T00:00:00"}, "as_of"),
        ({"metrics": "retention_90d,happiness"}, "metrics"),
        ({"as_of": "2030-01-01T00:00:00Z"}, "as_of"),
    ],
)
def test_bad_result_questions_name_the_field(client, session, writer, query, field):
    _members(session, 1)
    client.post(URL, json=BODY, headers=writer)
    row = {"member": "u-0", "variant": "discount", "assigned_at": "2026-03-01T00:00:00Z"}
    client.post(f"{URL}/pack/assignments", json={"assignments": [row]}, headers=writer)
    answer = client.get(f"{URL}/pack/results", query_string=query, headers=writer)
    assert field in _fields(answer)


def test_the_power_calculator_answers_days_and_the_cost_of_peeking(client, writer):
    body = {"baseline": 0.3, "mde": 0.1, "members_per_day": 300, "mode": "group_sequential"}
    answer = client.post(f"{URL}/power", json=body, headers=writer)
    assert answer.status_code == 200, answer.get_json()
    plan = answer.get_json()
    assert plan["days_total"] == plan["days_enrolling"] + 90
    modes = {cost["mode"]: cost for cost in plan["costs"]}
    assert (
        modes["fixed"]["n_treated"]
        < modes["group_sequential"]["n_treated"]
        < modes["always_valid"]["n_treated"]
    )
    bad = client.post(f"{URL}/power", json={**body, "baseline": 1.5}, headers=writer)
    assert "baseline" in _fields(bad)


def test_a_draft_s_split_changes_and_a_variant_with_members_stays(client, session, writer):
    _members(session, 1)
    client.post(URL, json=BODY, headers=writer)
    variants = copy.deepcopy(BODY["variants"])
    variants[0]["weight"], variants[1]["weight"] = 70, 30
    changed = client.patch(f"{URL}/pack", json={"variants": variants}, headers=writer)
    assert changed.status_code == 200, changed.get_json()
    assert [v["weight"] for v in changed.get_json()["variants"]] == [70, 30]
    row = {"member": "u-0", "variant": "service", "assigned_at": "2026-03-01T00:00:00Z"}
    client.post(f"{URL}/pack/assignments", json={"assignments": [row]}, headers=writer)
    renamed = [variants[0], {**variants[1], "key": "care"}]
    refused = client.patch(f"{URL}/pack", json={"variants": renamed}, headers=writer)
    assert "variants" in _fields(refused)
    keys = [v["key"] for v in client.get(f"{URL}/pack", headers=writer).get_json()["variants"]]
    assert keys == ["discount", "service"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "assignments": [
                    {"member": "u-0", "variant": [], "assigned_at": "2026-03-01T00:00:00Z"}
                ]
            },
            "assignments.0.variant",
        ),
        (
            {
                "assignments": [
                    {
                        "member": "u-0",
                        "variant": "discount",
                        "assigned_at": "0001-01-01T00:00:00+14:00",
                    }
                ]
            },
            "assignments.0.assigned_at",
        ),
    ],
)
def test_odd_import_values_are_refused_not_crashed_on(client, session, writer, body, field):
    _members(session, 1)
    client.post(URL, json=BODY, headers=writer)
    assert field in _fields(client.post(f"{URL}/pack/assignments", json=body, headers=writer))
    assert _count(session, Assignment) == 0


def test_a_broken_csv_or_a_holdout_row_without_a_holdout_is_refused(client, session, writer):
    _members(session, 2)
    client.post(URL, json={**BODY, "holdout": 0}, headers=writer)
    csv_headers = {**writer, "Content-Type": "text/csv"}
    broken = b'member,variant,assigned_at\r"u-0,discount,2026-03-01T00:00:00Z\n' + b"x" * 140_000
    assert "csv" in _fields(
        client.post(f"{URL}/pack/assignments", data=broken, headers=csv_headers)
    )
    text = b"member,variant,assigned_at\nu-0,holdout,2026-03-01T00:00:00Z\n"
    answer = client.post(f"{URL}/pack/assignments", data=text, headers=csv_headers)
    assert "assignments.0.variant" in _fields(answer)
    assert _count(session, Assignment) == 0


def test_a_design_keeps_exact_levels_and_a_partial_change_keeps_the_rest(client, session, writer):
    design = {"mode": "group_sequential", "looks": 4, "planned_members": 20000, "alpha": 0.001}
    created = client.post(URL, json={**BODY, "design": design}, headers=writer).get_json()
    assert created["design"]["alpha"] == 0.001
    changed = client.patch(f"{URL}/pack", json={"design": {"power": 0.975}}, headers=writer)
    assert changed.status_code == 200, changed.get_json()
    kept = changed.get_json()["design"]
    assert (kept["mode"], kept["looks"], kept["alpha"], kept["power"]) == (
        "group_sequential",
        4,
        0.001,
        0.975,
    )
    client.post(f"{URL}/pack/start", headers=writer)
    guardrails = {"guardrail_metrics": ["cost_per_member"]}
    assert "guardrail_metrics" in _fields(
        client.patch(f"{URL}/pack", json=guardrails, headers=writer)
    )


def test_results_with_aov_as_the_primary_metric_and_a_points_package_s_cost(
    client, session, writer
):
    _members(session, 40)
    body = copy.deepcopy(BODY)
    body["primary_metric"] = "aov"
    body["variants"][1]["benefits"] = [{"benefit": "points", "points": 500, "cost": 5}]
    client.post(URL, json=body, headers=writer)
    client.post(f"{URL}/pack/start", headers=writer)
    for i in range(40):
        client.post(f"{URL}/pack/assign", json={"member": f"u-{i}"}, headers=writer)
        _orders(session, f"u-{i}", NOW - dt.timedelta(hours=1) + dt.timedelta(seconds=i))
    answer = client.get(f"{URL}/pack/results", headers=writer)
    assert answer.status_code == 200, answer.get_json()
    found = answer.get_json()
    assert found["breakdowns"] == {"stage": [], "tier": [], "region": []}
    cost = found["variants"]["service"]["metrics"]["cost_per_member"]
    if cost["n"]:
        assert cost["value"] == pytest.approx(5.0)  # each service member got 500 points
    assert found["variants"]["service"]["metrics"]["aov"]["n"] == found["variants"]["service"]["n"]


def test_the_calculator_s_default_reading_is_one_look(client, writer):
    body = {"baseline": 0.3, "mde": 0.1, "members_per_day": 200}
    fixed = client.post(f"{URL}/power", json=body, headers=writer)
    assert fixed.status_code == 200, fixed.get_json()
    assert fixed.get_json()["looks"] == 1
    daily = client.post(f"{URL}/power", json={**body, "mode": "always_valid"}, headers=writer)
    assert daily.get_json()["looks"] == min(daily.get_json()["days_enrolling"], 100)
