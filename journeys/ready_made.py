"""Ready-made journeys for the five campaigns every membership team runs (DOMAIN.md):
dormant win-back, churn rescue, active growth, VIP care and new-member onboarding.

Each is a working definition with its message templates. A marketer creates a journey
from one on the builder's first page and adapts it; ``make demo`` installs and
publishes all five. Numbers follow the campaigns as the teams describe them: a 50-yuan
coupon after 30 days without an order and 100 yuan after 90, valid for 3 days;
coupon and double points for price-sensitive members at risk, an advisor's call and an
upgrade for the others; no discounts for VIPs.

Price sensitivity is the member attribute ``sensitivity`` ("price" or "service"),
which the shop's own model (or the simulator) sets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from journeys import versions
from journeys.models import Journey, MessageTemplate


@dataclasses.dataclass(frozen=True)
class Template:
    key: str
    body: str
    channel: str = "sms"
    title: str | None = None
    priority: int = 0  # VIP care goes before a promotion under a tight cap


@dataclasses.dataclass(frozen=True)
class ReadyMade:
    key: str
    name_zh: str
    name_en: str
    summary: str
    definition: Mapping[str, Any]
    templates: tuple[Template, ...]


def _watch(days: int, matched: str, timeout: str) -> dict[str, Any]:
    return {
        "type": "wait_for_event",
        "event": "order",
        "within_days": days,
        "matched": matched,
        "timeout": timeout,
    }


def _send(template: str, then: str, name: str | None = None) -> dict[str, Any]:
    step = {"type": "send", "channel": "sms", "template": template, "next": then}
    if name:
        step["name"] = name
    return step


def _coupon(value: int, threshold: int, days: int, then: str) -> dict[str, Any]:
    return {
        "type": "grant",
        "benefit": "coupon",
        "value": value,
        "threshold": threshold,
        "expires_days": days,
        "next": then,
        "name": f"满{threshold}减{value} ({days} 天)",
    }


WINBACK = ReadyMade(
    key="dormant_winback",
    name_zh="沉睡唤醒",
    name_en="Dormant win-back",
    summary="30+ days without an order: a 50-yuan coupon; 90+ days: 100 yuan. Both valid "
    "for 3 days, with copy that says so, and a reminder the day before they expire.",
    definition={
        "trigger": {"type": "stage_entered", "stages": ["dormant", "lapsed"]},
        "entry": {
            "reentry": "after_days",
            "reentry_days": 60,
            "holdout_percent": 10,
            "exit": "on_conversion",
        },
        "goal": {"event": "order", "within_days": 14},
        "start": "lapse",
        "steps": {
            "lapse": {
                "type": "branch",
                "name": "90 天以上未购?",
                "condition": "days_since_last_order >= 90",
                "yes": "coupon_100",
                "no": "coupon_50",
            },
            "coupon_50": _coupon(50, 200, 3, "tell_50"),
            "tell_50": _send("winback_50", "watch"),
            "coupon_100": _coupon(100, 300, 3, "tell_100"),
            "tell_100": _send("winback_100", "watch"),
            "watch": _watch(2, "done", "last_day"),
            "last_day": _send("winback_last_day", "done", "到期前一天提醒"),
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "winback_50",
            "{{ member.name }}，好久不见！为您保留的{{ coupon.value }}元券"
            "（满{{ coupon.threshold }}可用）仅剩3天，券码 {{ coupon.code }}，过期作废。",
        ),
        Template(
            "winback_100",
            "{{ member.name }}，我们想您了！专属{{ coupon.value }}元券（满{{ coupon.threshold }}"
            "可用）已到账，3天内有效，券码 {{ coupon.code }}，名额有限。",
        ),
        Template(
            "winback_last_day",
            "{{ member.name }}，您的专属优惠券明天到期，别让它溜走。",
        ),
    ),
)

RESCUE = ReadyMade(
    key="churn_rescue",
    name_zh="流失预警挽回",
    name_en="Churn rescue",
    summary="At-risk members get a rescue pack: price-sensitive members a coupon and double "
    "points, service-sensitive members an advisor's call and free shipping for a month.",
    definition={
        "trigger": {"type": "stage_entered", "stage": "at_risk"},
        "entry": {
            "reentry": "after_days",
            "reentry_days": 90,
            "holdout_percent": 10,
            "exit": "on_conversion",
        },
        "goal": {"event": "order", "within_days": 30},
        "start": "sensitivity",
        "steps": {
            "sensitivity": {
                "type": "branch",
                "name": "价格敏感?",
                "condition": "attributes.sensitivity = 'price'",
                "yes": "coupon",
                "no": "advisor",
            },
            "coupon": _coupon(30, 200, 7, "double_points"),
            "double_points": {
                "type": "grant",
                "benefit": "multiplier",
                "multiplier": 2,
                "expires_days": 7,
                "next": "tell_price",
                "name": "双倍积分 7 天",
            },
            "tell_price": _send("rescue_price", "done"),
            "advisor": {
                "type": "grant",
                "benefit": "service",
                "service": "advisor_callback",
                "next": "upgrade",
                "name": "专属顾问回电",
            },
            "upgrade": {
                "type": "grant",
                "benefit": "free_shipping",
                "expires_days": 30,
                "next": "tell_service",
                "name": "30 天免运费",
            },
            "tell_service": _send("rescue_service", "done"),
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "rescue_price",
            "{{ member.name }}，送您满200减30元券和7天双倍积分，券码 {{ coupon.code }}。",
        ),
        Template(
            "rescue_service",
            "{{ member.name }}，您的专属顾问将在24小时内致电，30天免运费已为您开通。",
        ),
    ),
)

GROWTH = ReadyMade(
    key="active_growth",
    name_zh="活跃会员成长",
    name_en="Active growth",
    summary="Active members earn 1.5x points for two weeks towards the next tier, then an "
    "invitation: a friend who joins brings both of them a 20-yuan coupon.",
    definition={
        "trigger": {"type": "stage_entered", "stage": "active"},
        "entry": {"reentry": "after_days", "reentry_days": 60, "holdout_percent": 5},
        "goal": {"event": "order", "within_days": 30},
        "start": "extra_points",
        "steps": {
            "extra_points": {
                "type": "grant",
                "benefit": "multiplier",
                "multiplier": 1.5,
                "expires_days": 14,
                "next": "tell_points",
                "name": "1.5 倍积分 14 天",
            },
            "tell_points": _send("growth_points", "pause"),
            "pause": {"type": "wait", "days": 7, "next": "invite"},
            "invite": _send("growth_referral", "referred"),
            "referred": {
                "type": "wait_for_event",
                "event": "referral",
                "within_days": 14,
                "matched": "reward",
                "timeout": "done",
            },
            "reward": _coupon(20, 100, 30, "thanks"),
            "thanks": _send("growth_referral_thanks", "done"),
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "growth_points",
            "{{ member.name }}，14天内购物享1.5倍积分，离下一等级更近一步。",
        ),
        Template(
            "growth_referral",
            "{{ member.name }}，邀请好友注册会员，你们各得一张20元券。",
        ),
        Template(
            "growth_referral_thanks",
            "{{ member.name }}，感谢推荐！20元券已到账，券码 {{ benefit.code }}。",
        ),
    ),
)

VIP_CARE = ReadyMade(
    key="vip_care",
    name_zh="VIP 关怀",
    name_en="VIP care",
    summary="On a VIP's birthday at 10:00 their time: a birthday gift and a month of early "
    "access to new collections. Service, not discounts.",
    definition={
        "trigger": {"type": "date", "field": "birthday", "days_before": 0, "at": "10:00"},
        "entry": {"audience": "stage = 'vip'", "reentry": "after_days", "reentry_days": 300},
        "start": "gift",
        "steps": {
            "gift": {
                "type": "grant",
                "benefit": "service",
                "service": "birthday_gift",
                "next": "early_access",
                "name": "生日礼",
            },
            "early_access": {
                "type": "grant",
                "benefit": "service",
                "service": "early_access",
                "next": "greet",
                "name": "新品优先购 30 天",
            },
            "greet": _send("vip_birthday", "done"),
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "vip_birthday",
            "{{ member.name }}，生日快乐！您的生日礼已备好，本月新品为您开放优先购。",
            priority=2,
        ),
    ),
)

ONBOARDING = ReadyMade(
    key="new_member_onboarding",
    name_zh="新会员引导",
    name_en="New-member onboarding",
    summary="A welcome coupon on joining; if no order follows within 7 days, a nudge "
    "towards the first purchase.",
    definition={
        "trigger": {"type": "stage_entered", "stage": "new"},
        "entry": {"reentry": "never", "holdout_percent": 10},
        "goal": {"event": "order", "within_days": 14},
        "start": "welcome_coupon",
        "steps": {
            "welcome_coupon": _coupon(20, 99, 14, "welcome"),
            "welcome": _send("onboarding_welcome", "first_order"),
            "first_order": _watch(7, "done", "nudge"),
            "nudge": _send("onboarding_nudge", "done", "7 天未下单提醒"),
            "done": {"type": "exit"},
        },
    },
    templates=(
        Template(
            "onboarding_welcome",
            "欢迎加入会员，{{ member.name }}！新人券满99减20已到账，14天内有效，"
            "券码 {{ benefit.code }}。",
        ),
        Template(
            "onboarding_nudge",
            "{{ member.name }}，您的新人券还没用哦，挑一件喜欢的吧。",
        ),
    ),
)

ALL: tuple[ReadyMade, ...] = (WINBACK, RESCUE, GROWTH, VIP_CARE, ONBOARDING)
BY_KEY = {ready.key: ready for ready in ALL}


def install_templates(session: Session, ready: ReadyMade, *, actor: str) -> None:
    """The ready-made journey's message templates, where none of that key exists."""
    existing = set(session.scalars(select(MessageTemplate.key)))
    for template in ready.templates:
        if template.key not in existing:
            session.add(
                MessageTemplate(
                    key=template.key,
                    name=template.key.replace("_", " "),
                    channel=template.channel,
                    title=template.title,
                    body=template.body,
                    priority=template.priority,
                    updated_by=actor,
                )
            )
    session.flush()


def create_from(
    session: Session,
    ready: ReadyMade,
    *,
    key: str,
    name: str,
    actor: str,
    now: dt.datetime,
) -> Journey:
    """A new journey (draft) from a ready-made one, with its message templates."""
    install_templates(session, ready, actor=actor)
    return versions.create(
        session,
        key=key,
        name=name,
        description=ready.summary,
        definition_data=dict(ready.definition),
        actor=actor,
        now=now,
        template=ready.key,
    )


def install_all(session: Session, *, actor: str, now: dt.datetime, publish: bool) -> list[str]:
    """Create (and publish) every ready-made journey not yet created; their keys."""
    made = []
    for ready in ALL:
        if session.scalar(select(Journey.id).where(Journey.key == ready.key)) is not None:
            continue
        journey = create_from(
            session, ready, key=ready.key, name=ready.name_zh, actor=actor, now=now
        )
        if publish and not versions.publish_errors(session, journey, versions.latest(journey)):
            versions.publish(session, journey, actor=actor, now=now, approver=True)
        made.append(ready.key)
    return made
