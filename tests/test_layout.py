"""The domain packages import nothing from Flask or app/ (DESIGN.md, Layout)."""

import ast

import pytest

from config import ROOT

DOMAIN = ["members", "journeys", "experiments", "simulator"]


@pytest.mark.parametrize("package", DOMAIN)
def test_domain_package_is_framework_free(package):
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in {"flask", "app", "flask_login", "flask_smorest", "werkzeug", "workers"}:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_layout_of_design_md_exists():
    for name in [
        "app",
        "members",
        "journeys",
        "experiments",
        "simulator",
        "workers",
        "migrations",
        "tests",
        "bench",
    ]:
        assert (ROOT / name).is_dir(), name
    for name in ["config.py", "wsgi.py", "README.md", "Makefile", "pyproject.toml"]:
        assert (ROOT / name).is_file(), name
