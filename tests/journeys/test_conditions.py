"""Conditions as marketers write them: parsed with errors that point at the place,
evaluated on records."""

from decimal import Decimal

import pytest

from journeys import conditions
from journeys.conditions import All, Any_, Compare, ConditionError

FIELDS = {"amount": "number", "category": "text", "stage": "text", "orders_30d": "number"}


def _parse(text):
    return conditions.parse(text, FIELDS)


def test_a_comparison_and_a_combination():
    assert _parse("amount >= 200") == Compare("amount", ">=", Decimal(200))
    tree = _parse("stage = 'dormant' and (category in ('美妆', \"母婴\") or orders_30d > 2)")
    assert tree == All(
        (
            Compare("stage", "=", "dormant"),
            Any_(
                (
                    Compare("category", "in", ("美妆", "母婴")),
                    Compare("orders_30d", ">", Decimal(2)),
                )
            ),
        )
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"amount": 250, "category": "美妆"}, True),
        ({"amount": "199.99", "category": "美妆"}, False),
        ({"amount": 300, "category": "服饰"}, False),
        ({"category": "美妆"}, False),  # no amount: not met, not an error
        ({"amount": "lots", "category": "美妆"}, False),
        ({"amount": "NaN", "category": "美妆"}, False),
    ],
)
def test_holds(record, expected):
    condition = _parse("amount >= 200 and category not in ('服饰')")
    assert conditions.holds(condition, record) is expected


@pytest.mark.parametrize(
    ("text", "words", "position"),
    [
        ("colour = 'red'", "unknown field 'colour'", 1),
        ("amount >= 'lots'", "expected a number", 11),
        ("stage > 'dormant'", "compare it with = or !=", 9),
        ("amount >=", "stops too early", 10),
        ("amount 200", "expected one of", 8),
        ("(amount > 1", "stops too early", 12),
        ("amount > 1 amount", "unexpected 'amount'", 12),
        ("amount > 1 ; drop", "cannot read", 12),
        ("", "write a condition", 1),
        ("category in 'x'", "list the values", 13),
    ],
)
def test_bad_conditions_point_at_the_place(text, words, position):
    with pytest.raises(ConditionError) as caught:
        _parse(text)
    assert words in str(caught.value)
    assert caught.value.position + 1 == position


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount = 100", True),
        ("amount != 100", False),
        ("amount > 99.5", True),
        ("amount < 100", False),
        ("amount <= 100", True),
        ("amount in (1, 100)", True),
        ("amount not in (1, 100)", False),
        ("category != 'x' or amount > 1000", True),
    ],
)
def test_every_operator(text, expected):
    assert conditions.holds(_parse(text), {"amount": Decimal(100), "category": "y"}) is expected
