"""The dependency direction of DESIGN.md: members <- experiments <- journeys <- workers, app.

The domain packages import nothing from Flask or app/, and none imports a package
that stands after it.
"""

import ast

import pytest

from config import ROOT

WEB = {
    "flask",
    "flask_login",
    "flask_smorest",
    "flask_wtf",
    "flask_babel",
    "flask_limiter",
    "flask_migrate",
    "werkzeug",
    "app",
    "workers",
    "config",
}
# What each domain package may import from the project.
ALLOWED = {
    "members": {"members"},
    "experiments": {"members", "experiments"},
    "journeys": {"members", "experiments", "journeys"},
    "simulator": {"members", "experiments", "journeys", "simulator"},
}
PROJECT = {"members", "experiments", "journeys", "simulator", "workers", "app", "config"}


def _imports(path, package):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module.split(".")[0]
            elif node.level > len(path.relative_to(ROOT / package).parts) - 1:
                yield "<relative import out of the package>"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_domain_package_keeps_the_dependency_direction(package):
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for name in _imports(path, package):
            if (
                name in WEB
                or (name in PROJECT and name not in ALLOWED[package])
                or name.startswith("<")
            ):
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
