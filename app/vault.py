"""The app's vault for stored secrets (provider credentials, webhook signing secrets)."""

from __future__ import annotations

from flask import current_app

from journeys.vault import Vault


def current() -> Vault:
    """The vault of the current app, keyed by its SECRET_KEY."""
    vault = current_app.extensions.get("tenure.vault")
    if vault is None:
        vault = current_app.extensions["tenure.vault"] = Vault(current_app.config["SECRET_KEY"])
    return vault
