"""The experiment pages as marketers use them: design an experiment in one form with
every message beside its field, start and stop it, read its results (verdict, tables,
charts, the sample-ratio alarm) as of a day, download them as CSV, and size it with the
power calculator; analysts read only."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.web import charts
from experiments.models import Assignment, Experiment, ExperimentStatus
from members.audit import AuditEntry
from members.event import Event
from members.member import Member
from tests import factories

NOW = factories.NOW
FORM = {
    "key": "pack",
    "name": "Service vs discount",
    "hypothesis": "A service package keeps more at-risk members than a discount",
    "audience": "stage = 'at_risk'",
    "holdout": "10",
    "v0.key": "discount",
    "v0.name": "Discount package",
    "v0.weight": "50",
    "v0.benefits": "coupon value=30 threshold=199 expires_days=14",
    "control": "0",
    "v1.key": "service",
    "v1.name": "Service package",
    "v1.weight": "50",
    "v1.benefits": "service service=advisor_callback cost=15\npoints points=500",
    "primary_metric": "retention_30d",
    "guardrail_metrics": ["revenue_per_member", "cost_per_member"],
    "minimum_detectable_effect": "10",
    "mode": "fixed",
    "looks": "5",
    "alpha": "0.05",
    "power": "0.8",
    "winsor_percentile": "99",
    "correction": "holm",
}


@pytest.fixture(autouse=True)
def fixed_clock(app):
    app.config["TENURE_CLOCK"] = lambda: NOW


@pytest.fixture
def marketer(client, session):
    factories.user(session, "marketer")
    factories.login(client, "marketer@shop.example")
    return factories.csrf_token(client, "/experiments")


def _post(client, url, token, **form):
    return client.post(url, data={"csrf_token": token, **form})


def _create(client, token, **changes):
    answer = _post(client, "/experiments/new", token, **{**FORM, **changes})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return answer


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def _error_beside(html: str, field_id: str, message: str) -> bool:
    """The message is the error paragraph of that field."""
    pattern = rf'id="{re.escape(field_id)}-error">[^<]*{re.escape(message)}'
    return re.search(pattern, html) is not None


def test_create_through_the_form_lands_on_its_page_and_in_the_list(client, marketer, session):
    answer = _create(client, marketer)
    assert answer.headers["Location"].endswith("/experiments/pack")
    page = client.get("/experiments/pack")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Discount package" in html and "Service package" in html
    assert "a coupon: 30 yuan off orders of 199 yuan or more for 14 days" in html
    assert "500 points" in html and "(costs the shop 15 yuan)" in html
    assert "Start" in html and "Power calculator" in html  # a draft: start it, size it
    experiment = session.scalar(select(Experiment).where(Experiment.key == "pack"))
    assert experiment.status == ExperimentStatus.DRAFT
    assert experiment.holdout_percent == Decimal(10)
    service = experiment.variants[1].benefits
    assert service["name"] == "Service package"
    assert service["benefits"] == [
        {"benefit": "service", "service": "advisor_callback", "cost": "15"},
        {"benefit": "points", "points": 500},
    ]
    assert experiment.variants[0].is_control and not experiment.variants[1].is_control
    actors = session.scalars(select(AuditEntry.actor).where(AuditEntry.target_id == "pack"))
    assert "user:marketer@shop.example" in set(actors)
    listing = client.get("/experiments").get_data(as_text=True)
    assert "Service vs discount" in listing and "retention_30d" in listing
    assert "New experiment" in listing


def test_the_edit_form_shows_the_design_as_typed(client, marketer):
    _create(client, marketer)
    html = client.get("/experiments/pack/edit").get_data(as_text=True)
    assert "coupon value=30 threshold=199 expires_days=14</textarea>" in html
    assert 'name="v1.weight" min="1" max="100" value="50"' in html
    assert re.search(r'value="cost_per_member" checked', html)


def test_a_draft_is_edited_in_the_same_form(client, marketer, session):
    _create(client, marketer)
    bad = _post(client, "/experiments/pack/edit", marketer, **{**FORM, "v0.weight": "70"})
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert _error_beside(html, "variants", "the weights must add up to 100, not 120")
    assert 'name="v0.weight" min="1" max="100" value="70"' in html
    changes = {"v2.key": "both", "v2.weight": "0"}
    refused = _post(client, "/experiments/pack/edit", marketer, **{**FORM, **changes})
    assert _error_beside(refused.get_data(as_text=True), "v2.weight", "from 1 to 100")
    changes = {"name": "Packages", "key": "renamed", "mode": "always_valid", "holdout": "20"}
    saved = _post(client, "/experiments/pack/edit", marketer, **{**FORM, **changes})
    assert saved.status_code == 302, saved.get_data(as_text=True)
    experiment = session.scalar(select(Experiment))
    assert experiment.key == "pack"  # a key never changes
    assert (experiment.name, experiment.design["mode"]) == ("Packages", "always_valid")
    assert experiment.holdout_percent == Decimal(20)
    assert [v.weight for v in experiment.variants] == [50, 50]
    same = _post(client, "/experiments/pack/edit", marketer, **{**FORM, **changes})
    assert same.status_code == 302
    assert "Nothing changed." in client.get("/experiments/pack").get_data(as_text=True)


def test_a_draft_s_weights_change(client, marketer, session):
    _create(client, marketer)
    changes = {"v0.weight": "70", "v1.weight": "30"}
    saved = _post(client, "/experiments/pack/edit", marketer, **{**FORM, **changes})
    assert saved.status_code == 302
    assert [v.weight for v in session.scalar(select(Experiment)).variants] == [70, 30]


def test_a_bad_form_shows_each_message_beside_its_field_and_stores_nothing(
    client, marketer, session
):
    answer = _post(
        client,
        "/experiments/new",
        marketer,
        **{
            **FORM,
            "v1.weight": "40",
            "holdout": "60",
            "v0.benefits": "coupon",
            "primary_metric": "happiness",
        },
    )
    assert answer.status_code == 400
    html = answer.get_data(as_text=True)
    assert _error_beside(html, "variants", "the weights must add up to 100, not 90")
    assert _error_beside(html, "holdout", "must be a number from 0 to 50")
    assert _error_beside(html, "v0.benefits", "line 1 (value): give the coupon&#39;s value in yuan")
    assert _error_beside(html, "primary_metric", "must be one of")
    # what the user typed is kept
    assert 'id="holdout" name="holdout" min="0" max="50" step="0.1" value="60"' in html
    assert 'name="v1.weight" min="1" max="100" value="40"' in html
    assert 'name="v0.benefits"' in html and ">coupon</textarea>" in html
    assert '<option value="happiness" selected>' in html
    assert 'value="Service vs discount"' in html
    assert _count(session, Experiment) == 0


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"v1.benefits": "coupon valu=30"}, "v1.benefits", "valu=30 is not a setting"),
        ({"v1.benefits": "value=30"}, "v1.benefits", "start with the benefit"),
        ({"v1.benefits": "gift value=3"}, "v1.benefits", "must be one of coupon"),
        ({"v1.key": "holdout"}, "v1.key", "holdout is the members who get nothing"),
        ({"control": ""}, "variants", "mark exactly one variant as the control"),
        ({"guardrail_metrics": ["nps"]}, "guardrail_metrics", "no metric &#39;nps&#39;"),
        ({"audience": "stage = "}, "audience", ""),
        ({"mode": "group_sequential"}, "planned_members", "give that number"),
        ({"looks": "1"}, "looks", "must be a whole number from 2 to 20"),
        ({"key": "Bad Key"}, "key", "lower-case letters"),
        ({"v1.key": "", "v1.name": "", "v1.weight": "", "v1.benefits": ""}, "variants", "2 to 10"),
    ],
)
def test_each_mistake_is_named_beside_its_field(client, marketer, session, changes, field, message):
    answer = _post(client, "/experiments/new", marketer, **{**FORM, **changes})
    assert answer.status_code == 400
    assert _error_beside(answer.get_data(as_text=True), field, message)
    assert _count(session, Experiment) == 0


def test_a_taken_key_is_refused_beside_the_key(client, marketer):
    _create(client, marketer)
    again = _post(client, "/experiments/new", marketer, **FORM)
    assert again.status_code == 400
    assert _error_beside(again.get_data(as_text=True), "key", "an experiment called pack exists")


def test_analysts_read_the_pages_but_cannot_change_anything(app, client, marketer, session):
    _create(client, marketer)
    analyst = app.test_client()
    factories.user(session, "analyst")
    factories.login(analyst, "analyst@shop.example")
    token = factories.csrf_token(analyst, "/experiments")
    listing = analyst.get("/experiments").get_data(as_text=True)
    assert "Service vs discount" in listing and "New experiment" not in listing
    page = analyst.get("/experiments/pack")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "start_experiment" not in html and "/experiments/pack/start" not in html
    assert "/experiments/pack/edit" not in html
    assert analyst.get("/experiments/new").status_code == 403
    assert analyst.get("/experiments/pack/edit").status_code == 403
    assert _post(analyst, "/experiments/new", token, **{**FORM, "key": "other"}).status_code == 403
    assert _post(analyst, "/experiments/pack/edit", token, **FORM).status_code == 403
    assert _post(analyst, "/experiments/pack/start", token).status_code == 403
    assert _post(analyst, "/experiments/pack/stop", token).status_code == 403
    assert session.scalar(select(Experiment.status)) == ExperimentStatus.DRAFT


def test_start_freeze_the_split_edit_what_may_change_and_stop(client, marketer, session):
    _create(client, marketer)
    started = _post(client, "/experiments/pack/start", marketer)
    assert started.status_code == 302
    page = client.get("/experiments/pack").get_data(as_text=True)
    assert "Started: members are assigned from now on." in page
    assert "/experiments/pack/stop" in page and "confirm(" in page
    form = client.get("/experiments/pack/edit").get_data(as_text=True)
    assert "its split (audience, holdout, variants and their packages)" in form
    assert form.count('<fieldset class="plain" disabled') >= 3
    # the disabled fields are not sent; a forged weight is ignored, the name changes
    saved = _post(
        client,
        "/experiments/pack/edit",
        marketer,
        name="Packages",
        hypothesis="Services beat discounts",
        guardrail_metrics=["cost_per_member"],
        **{"v0.weight": "70", "v1.weight": "30"},
    )
    assert saved.status_code == 302, saved.get_data(as_text=True)
    experiment = session.scalar(select(Experiment))
    session.refresh(experiment)
    assert experiment.name == "Packages"
    assert [v.weight for v in experiment.variants] == [50, 50]
    # the guardrails are the family the correction counts: fixed once running
    assert experiment.guardrail_metrics == {"metrics": ["revenue_per_member", "cost_per_member"]}
    stopped = _post(client, "/experiments/pack/stop", marketer)
    assert stopped.status_code == 302
    session.refresh(experiment)
    assert experiment.status == ExperimentStatus.STOPPED
    _post(client, "/experiments/pack/start", marketer)
    assert "cannot run again" in client.get("/experiments/pack").get_data(as_text=True)


def _members(session, count, prefix="m"):
    session.execute(
        Member.__table__.insert(),
        [
            {"external_id": f"{prefix}-{i}", "joined_at": NOW - dt.timedelta(days=400)}
            for i in range(count)
        ],
    )
    return session.scalars(
        select(Member.id).where(Member.external_id.like(f"{prefix}-%")).order_by(Member.id)
    ).all()


def _assign(session, key, arms, start, prefix="m"):
    """Members assigned to ``arms`` (variant keys or "holdout"), an hour apart from
    ``start``; returns (member id, arm, assigned_at)."""
    experiment = session.scalar(select(Experiment).where(Experiment.key == key))
    ids = {v.key: v.id for v in experiment.variants}
    members = _members(session, len(arms), prefix)
    rows = [
        {
            "experiment_id": experiment.id,
            "member_id": member_id,
            "variant_id": ids.get(arm),
            "bucket": None,
            "source": "hash",
            "assigned_at": start + dt.timedelta(hours=i),
            "stage": ("at_risk", "dormant")[i % 2],
            "tier": ("gold", "silver", None)[i % 3],
            "region": "华东",
        }
        for i, (member_id, arm) in enumerate(zip(members, arms, strict=True))
    ]
    session.execute(Assignment.__table__.insert(), rows)
    experiment.started_at = start
    session.commit()
    return [(r["member_id"], arm, r["assigned_at"]) for r, arm in zip(rows, arms, strict=True)]


def _orders(session, placed, rate):
    """An order 10 days after assignment for a share ``rate[arm]`` of each arm, and one
    before assignment for everyone (CUPED's covariate)."""
    events, seen = [], {}
    for member_id, arm, at in placed:
        seen[arm] = seen.get(arm, 0) + 1
        events.append(
            {
                "event_id": f"pre-{member_id}",
                "member_id": member_id,
                "type": "order",
                "occurred_at": at - dt.timedelta(days=20),
                "amount": Decimal(80 + member_id % 50),
                "properties": {},
            }
        )
        if (seen[arm] * rate[arm]) % 1 < rate[arm]:
            events.append(
                {
                    "event_id": f"post-{member_id}",
                    "member_id": member_id,
                    "type": "order",
                    "occurred_at": at + dt.timedelta(days=10),
                    "amount": Decimal(150 + member_id % 70),
                    "properties": {},
                }
            )
    session.execute(Event.__table__.insert(), events)
    session.commit()


def _running_with_results(client, marketer, session):
    _create(client, marketer)
    _post(client, "/experiments/pack/start", marketer)
    arms = ["holdout" if i % 10 == 0 else ("discount", "service")[i % 2] for i in range(400)]
    placed = _assign(session, "pack", arms, NOW - dt.timedelta(days=120))
    _orders(session, placed, {"discount": 0.3, "service": 0.6, "holdout": 0.2})


def test_a_running_experiment_shows_its_results_with_charts(client, marketer, session):
    _running_with_results(client, marketer, session)
    page = client.get("/experiments/pack")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Verdict on retention_30d" in html
    assert "Service package kept" in html and "more members at 30 days" in html
    assert "Sample ratio mismatch" not in html
    assert "Against the control (Discount package)" in html and "Against the holdout" in html
    assert html.count('<table class="results">') == 1 + 2  # service vs control; both vs holdout
    assert "CUPED lift" in html and "p (adjusted)" in html
    charts_drawn = re.findall(r'<svg class="chart".*?</svg>', html, flags=re.S)
    assert len(charts_drawn) == 3  # the forest plot, retention by horizon, Kaplan-Meier
    forest, retention, survival = charts_drawn
    assert 'role="img"' in forest and "<rect" in forest and "<line" in forest
    assert "Service package · retention_30d" in forest
    assert "<circle" in retention and "Holdout" in retention
    assert survival.count("<path") >= 3 and 'stroke-dasharray="6 4"' in survival
    assert "Log-rank test" in html
    assert "By stage" in html and "at_risk" in html and "dormant" in html
    assert "Cost and return per member" in html
    assert "no significant harm on revenue_per_member" in html
    assert "the relative lift is known to ±" in html
    assert "Power calculator" not in html  # not a draft any more
    off = client.get("/experiments/pack?cuped=0").get_data(as_text=True)
    assert "CUPED lift" not in off and 'value="0" checked' in off


def test_the_results_as_of_a_day(client, marketer, session):
    _running_with_results(client, marketer, session)
    # 20 days after the first assignment no 30-day window has closed
    early = (NOW - dt.timedelta(days=100)).date().isoformat()
    page = client.get(f"/experiments/pack?as_of={early}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Service package against Discount package: not enough members yet" in html
    assert f'name="as_of" value="{early}"' in html
    before = client.get("/experiments/pack?as_of=2026-01-01")
    assert before.status_code == 400
    html = before.get_data(as_text=True)
    assert _error_beside(html, "as_of", "2026-01-01 is before the experiment started")
    assert "Verdict on" in html  # the results as of now are still shown
    future = client.get("/experiments/pack?as_of=2027-01-01")
    assert future.status_code == 400
    assert "is in the future" in future.get_data(as_text=True)
    garbage = client.get("/experiments/pack?as_of=yesterday")
    assert garbage.status_code == 400
    assert "YYYY-MM-DD" in garbage.get_data(as_text=True)


def test_a_sample_ratio_mismatch_raises_the_red_banner(client, marketer, session):
    _create(client, marketer, holdout="0")
    _post(client, "/experiments/pack/start", marketer)
    _assign(session, "pack", ["discount"] * 900 + ["service"] * 600, NOW - dt.timedelta(days=70))
    html = client.get("/experiments/pack").get_data(as_text=True)
    banner = re.search(r'<div class="banner bad" role="alert">(.*?)</div>', html, flags=re.S)
    assert banner, "no sample-ratio banner"
    text = banner.group(1)
    assert "Sample ratio mismatch" in text and "p &lt; 0.001;" in text
    assert "Discount package 900, Service package 600" in text
    assert "Discount package 750, Service package 750" in text


def test_the_results_as_csv(client, marketer, session):
    _running_with_results(client, marketer, session)
    answer = client.get("/experiments/pack/results.csv")
    assert answer.status_code == 200
    assert answer.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert rows and {"against", "variant", "metric", "p_value"} <= set(rows[0])
    assert {r["against"] for r in rows} == {"control", "holdout"}
    refused = client.get("/experiments/pack/results.csv?as_of=2020-01-01")
    assert refused.status_code == 400
    assert "is before the experiment started" in refused.get_data(as_text=True)


def test_no_results_before_the_start(client, marketer):
    _create(client, marketer)
    assert "Verdict on" not in client.get("/experiments/pack").get_data(as_text=True)
    assert client.get("/experiments/pack/results.csv").status_code == 400
    assert client.get("/experiments/nothing").status_code == 404


CALC = {
    "calc": "1",
    "baseline": "0.3",
    "mde": "0.1",
    "members_per_day": "200",
    "horizon_days": "90",
    "treated_share": "0.45",
    "control_share": "0.45",
    "alpha": "0.05",
    "power": "0.8",
    "mode": "fixed",
    "looks": "5",
}


def test_the_power_calculator(client, marketer):
    page = client.get("/experiments/new", query_string=CALC)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "3,760" in html  # members per arm, as power.days_needed says
    assert "days until the last window closes" in html
    assert re.search(r"Checking every day costs \d+% more members than one look at the end", html)
    bad = client.get("/experiments/new", query_string={**CALC, "baseline": "1.5"})
    html = bad.get_data(as_text=True)
    assert _error_beside(html, "calc-baseline", "less than or equal to 0.999")
    assert "days enrolling" not in html
    shares = client.get(
        "/experiments/new", query_string={**CALC, "treated_share": "0.6", "control_share": "0.6"}
    )
    assert _error_beside(shares.get_data(as_text=True), "calc-control_share", "more than 1")


def test_the_calculator_is_prefilled_from_the_draft(client, marketer):
    _create(client, marketer)
    html = client.get("/experiments/pack").get_data(as_text=True)
    assert 'id="calc-treated_share" name="treated_share" step="any" value="0.45"' in html
    assert 'id="calc-horizon_days" name="horizon_days" step="1" value="30"' in html
    asked = client.get("/experiments/pack", query_string={**CALC, "mode": "group_sequential"})
    assert "days enrolling" in asked.get_data(as_text=True)


def test_charts_escape_their_texts():
    svg = charts.forest(
        [charts.Row("<script>alert(1)</script>", 0.1, -0.05, 0.25, "neutral", "+10%")],
        label='say "hi"',
        axis="lift",
        empty="none",
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'aria-label="say &#34;hi&#34;"' in svg
    lines = charts.lines(
        [charts.Series("a & b", [(7, 0.1), (30, None), (60, 0.3)])],
        label="l",
        x_label="x",
        y_label="y",
        x_marks=(7, 30, 60),
    )
    assert "a &amp; b" in lines and lines.count("<circle") == 2
