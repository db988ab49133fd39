"""The model's parameters: defaults, a TOML file over them, and every mistake named."""

import pytest

from simulator import params
from simulator.params import ParamError


def test_the_defaults_describe_the_canonical_shop():
    p = params.Params()
    assert 0 < p.population.price_sensitive_share < 1
    assert sum(p.population.categories.values()) == pytest.approx(1)
    assert {peak.name for peak in p.joining.peaks} >= {"618", "双11"}
    # The truth behind the canonical experiment: services hold service-sensitive
    # members back more than price-sensitive ones, coupons the other way round.
    fx = p.effects
    assert fx.service_churn_reduction.service > fx.service_churn_reduction.price
    assert fx.coupon_purchase_lift.price > fx.coupon_purchase_lift.service


def test_a_file_overrides_by_section_and_name(tmp_path):
    path = tmp_path / "shop.toml"
    path.write_text(
        "[purchases]\nrate_mean = 0.08\n\n[effects.service_churn_reduction]\nservice = 0.7\n"
        "[clock]\ntick_hours = [19, 9]\n",
        encoding="utf-8",
    )
    p = params.load(path)
    assert p.purchases.rate_mean == 0.08
    assert p.effects.service_churn_reduction == params.BySensitivity(
        price=params.Effects().service_churn_reduction.price, service=0.7
    )
    assert p.clock.tick_hours == [9, 19]
    # Everything not named keeps its default.
    assert p.churn == params.Churn()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"purchases": {"rate_meen": 1}}, "purchases.rate_meen: not a parameter"),
        ({"purchase": {}}, "purchase: not a parameter"),
        ({"purchases": {"rate_mean": "high"}}, "purchases.rate_mean: must be a number"),
        ({"purchases": {"rate_mean": True}}, "purchases.rate_mean: must be a number"),
        ({"churn": {"base_hazard": 2}}, "churn.base_hazard: must be at most 1 (got 2)"),
        ({"churn": {"drift_days": 0}}, "churn.drift_days: must be at least 1"),
        ({"effects": {"service_days": 1.5}}, "effects.service_days: must be a whole number"),
        ({"effects": {"service_churn_reduction": {"vip": 1}}}, "service_churn_reduction.vip"),
        ({"clock": {"tick_hours": [25]}}, "clock.tick_hours[0]: must be an hour from 0 to 23"),
        ({"clock": {"tick_hours": [9, 9]}}, "clock.tick_hours: an hour appears twice"),
        ({"joining": 3}, "joining: must be a table of parameters"),
        (
            {
                "population": {
                    "regions": [
                        {"name": "x", "timezone": "Mars/Base", "country": "CN", "weight": 1}
                    ]
                }
            },
            "population.regions[0].timezone: 'Mars/Base' is not an IANA time zone",
        ),
        (
            {"population": {"regions": [{"name": "x", "timezone": "UTC", "weight": 1}]}},
            "population.regions[0].country: missing",
        ),
        ({"population": {"categories": {"玩具": 1}}}, "purchases.order_value.玩具: missing"),
    ],
)
def test_a_mistake_is_named(data, message):
    with pytest.raises(ParamError, match=None) as caught:
        params.from_dict(data)
    assert message in str(caught.value)


def test_a_file_that_is_not_toml_or_not_there(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("rate_mean = = 2", encoding="utf-8")
    with pytest.raises(ParamError, match="is not a TOML file"):
        params.load(bad)
    with pytest.raises(ParamError, match="cannot read"):
        params.load(tmp_path / "missing.toml")
