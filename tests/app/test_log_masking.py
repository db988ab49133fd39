"""Phone numbers are masked in every log line, whoever writes it: the app's handlers
carry a filter that masks the formatted line."""

from __future__ import annotations

import io
import logging

import pytest

from app import PhoneMaskFilter, mask_phones


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("to +8613800138000 ok", "to +86138****8000 ok"),
        ("13800138000", "138****8000"),
        ("+447700900123: failed", "+44770***0123: failed"),
        ("+86138****8000", "+86138****8000"),
        (
            "order 20261124, 1999.00 CNY, ts 1732406400000",
            "order 20261124, 1999.00 CNY, ts 1732406400000",
        ),
        ("sid SM13800138000", "sid SM13800138000"),
    ],
    ids=["e164", "bare-mainland", "uk", "already-masked", "not-phones", "inside-an-id"],
)
def test_mask_phones(line, masked):
    assert mask_phones(line) == masked


def test_a_handler_with_the_filter_never_writes_a_number(app):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PhoneMaskFilter())
    logger = logging.getLogger("tenure.test.masking")
    logger.addHandler(handler)
    try:
        logger.warning("SMS to %s failed: %s", "+8613800138000", {"To": "+8613900139000"})
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "+86138****8000" in written and "+86139****9000" in written
    assert "13800138000" not in written and "13900139000" not in written


def test_the_app_puts_the_filter_on_every_root_handler(app):
    root = logging.getLogger()
    assert root.handlers
    assert all(any(isinstance(f, PhoneMaskFilter) for f in h.filters) for h in root.handlers)
