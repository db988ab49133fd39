"""Providers by kind. Each module holds one provider; its SDK is imported only when a
message goes through it."""

from __future__ import annotations

import importlib

from journeys.providers.base import Provider

MODULES = {
    "console": "journeys.providers.console:Console",
    "alibaba": "journeys.providers.alibaba:AlibabaSms",
    "twilio": "journeys.providers.twilio:TwilioSms",
    "jpush": "journeys.providers.jpush:JPush",
    "fcm": "journeys.providers.fcm:Fcm",
    "webhook": "journeys.providers.webhook:WebhookChannel",
}
# Kinds a marketer can add an account for (the console needs none).
ACCOUNT_KINDS = ("alibaba", "twilio", "jpush", "fcm", "webhook")


def kind(name: str) -> type[Provider]:
    """The provider class of a kind (KeyError for an unknown one)."""
    module, _, attribute = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
