"""The campaigns a simulation can start at go-live (``--campaigns``): the five
ready-made journeys, and the canonical benefit experiment of DOMAIN.md with the
journey that assigns it: members who become active are split at random between a
discount package and a service package, with a 10% holdout that gets neither."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments import design, manage
from experiments.models import Experiment
from journeys import audience, ready_made, versions
from journeys.models import Journey
from journeys.ready_made import ReadyMade, Template

ACTOR = "simulator"
EXPERIMENT_KEY = "benefit_packages"

EXPERIMENT = {
    "key": EXPERIMENT_KEY,
    "name": "折扣权益包 vs 服务权益包",
    "hypothesis": "A service package (an advisor's call and a month of free shipping) keeps "
    "more newly active members buying within 90 days than a discount package (a coupon "
    "and two weeks of double points).",
    "variants": [
        {
            "key": "discount",
            "name": "折扣包 Discount package",
            "weight": 50,
            "control": True,
            "benefits": [
                {"benefit": "coupon", "value": 30, "threshold": 199, "expires_days": 14},
                {"benefit": "multiplier", "multiplier": 2, "expires_days": 14},
            ],
        },
        {
            "key": "service",
            "name": "服务包 Service package",
            "weight": 50,
            "benefits": [
                {"benefit": "service", "service": "advisor_callback", "cost": 15},
                {"benefit": "free_shipping", "expires_days": 30, "cost": 8},
            ],
        },
    ],
    "holdout": 10,
    "primary_metric": "retention_90d",
    "guardrail_metrics": ["revenue_per_member", "cost_per_member"],
    "minimum_detectable_effect": 10,
    "design": {"mode": "fixed"},
}

PACKAGES = ReadyMade(
    key="benefit_package_test",
    name_zh="权益包实验",
    name_en="Benefit package experiment",
    summary="Members who become active get, at random, the discount package or the service "
    "package (10% get neither); retention at 90 days tells which keeps them.",
    definition={
        "trigger": {"type": "stage_entered", "stage": "active"},
        "entry": {"reentry": "never"},
        "start": "split",
        "steps": {
            "split": {
                "type": "experiment_split",
                "experiment": EXPERIMENT_KEY,
                "variants": {
                    "discount": "tell_discount",
                    "service": "tell_service",
                    "holdout": "done",
                },
            },
            "tell_discount": {
                "type": "send",
                "channel": "sms",
                "template": "package_discount",
                "next": "done",
            },
            "tell_service": {
                "type": "send",
                "channel": "sms",
                "template": "package_service",
                "next": "done",
            },
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "package_discount",
            "{{ member.name }}，送您满199减30元券和14天双倍积分，券码 {{ coupon.code }}。",
        ),
        Template(
            "package_service",
            "{{ member.name }}，您的专属顾问将致电为您服务，30天免运费已开通。",
        ),
    ),
)


def start(session: Session, now: dt.datetime, *, salt: str) -> list[str]:
    """Install and publish what is not there yet; the keys of what was started."""
    started = ready_made.install_all(session, actor=ACTOR, now=now, publish=True)
    experiment = session.scalar(select(Experiment).where(Experiment.key == EXPERIMENT_KEY))
    if experiment is None:
        clean, errors = design.check(EXPERIMENT, read_audience=audience.problem)
        if errors:  # pragma: no cover - a fixed design
            raise AssertionError(errors)
        experiment = manage.create(session, clean, actor=ACTOR, now=now)
        # The same seed assigns the same members: the salt comes from the simulation.
        experiment.salt = salt
        manage.start(session, experiment, actor=ACTOR, now=now)
        started.append(EXPERIMENT_KEY)
    if session.scalar(select(Journey.id).where(Journey.key == PACKAGES.key)) is None:
        journey = ready_made.create_from(
            session, PACKAGES, key=PACKAGES.key, name=PACKAGES.name_zh, actor=ACTOR, now=now
        )
        problems = versions.publish_errors(session, journey, versions.latest(journey))
        if problems:  # pragma: no cover - a fixed definition
            raise AssertionError(problems)
        versions.publish(session, journey, actor=ACTOR, now=now, approver=True)
        started.append(PACKAGES.key)
    session.flush()
    return started
