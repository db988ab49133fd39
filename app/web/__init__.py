"""Marketer pages: the shell, the overview, and the settings of this stage."""

from flask import Blueprint

bp = Blueprint("web", __name__)

from app.web import (  # noqa: E402, F401  (routes register on bp)
    audit,
    data_in,
    experiment_design,
    experiments,
    home,
    imports,
    journeys,
    messaging,
    points,
    sending,
    settings,
    stages,
    tiers,
    webhooks,
)
