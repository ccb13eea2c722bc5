"""The version matrix and the static checks, run by ``scripts/matrix`` (and so by CI).

Each cell is a whole test-suite run on PostgreSQL and Redis, nothing skipped:

- ``lowest``: Python 3.10 with every lower bound of ``pyproject.toml``
  installed exactly (Django, Celery, kombu, requests, and the extras'
  prometheus_client): what the declared ranges promise at their bottom.
- ``default``: Python 3.11 with the newest Django 5.2, as ``scripts/test``
  runs it (so CI leaves this cell to ``scripts/test``).
- ``django6.0``: Python 3.12 with Django 6.0.
- ``newest``: Python 3.13 with Django 6.1 and the newest Celery and kombu.
- ``sqlite``: Python 3.13 with Django 6.1, as a new site starts, on SQLite (a file, so
  the worker processes of the end-to-end tests share it): the whole suite but the tests
  marked ``postgresql``, which need PostgreSQL itself.

``nox -s lint`` runs ruff (lint and format), mypy on the typed modules, builds
the documentation with Sphinx (warnings are errors), and builds the sdist and
wheel to check what a site would install.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

nox.options.sessions = ["lint", "tests(lowest)", "tests(django6.0)", "tests(newest)", "tests(sqlite)"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def lower_bounds() -> list[str]:
    """``name==floor`` for every runtime dependency of pyproject.toml, and for every package an
    extra adds (``prometheus_client`` for ``[prometheus]``)."""
    pins: dict[str, str] = {}
    extras = [r for group in PYPROJECT["project"]["optional-dependencies"].values() for r in group]
    for requirement in [*PYPROJECT["project"]["dependencies"], *extras]:
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?.*>=\s*([^,;\s]+)", requirement)
        assert match, f"no lower bound in {requirement!r}"
        pins.setdefault(match.group(1).lower(), f"{match.group(1)}=={match.group(3)}")
    return list(pins.values())


CELLS = {
    "lowest": ("3.10", lower_bounds()),
    "default": ("3.11", ["Django>=5.2,<6.0"]),
    "django6.0": ("3.12", ["Django>=6.0,<6.1"]),
    "newest": ("3.13", ["Django>=6.1,<6.2", "celery>=5.7,<5.8", "kombu>=5.7,<5.8"]),
    "sqlite": ("3.13", ["Django>=6.1,<6.2"]),
}


@nox.session
@nox.parametrize(
    ("python", "pins"),
    [nox.param(python, pins, id=name) for name, (python, pins) in CELLS.items()],
)
def tests(session: nox.Session, pins: list[str]) -> None:
    """The whole suite on one cell of the matrix. Extra arguments go to pytest."""
    env = {"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    args = list(session.posargs)
    if session.name.endswith("(sqlite)"):
        # Beside the virtualenv, not in session.create_tmp(): that also points TMPDIR into
        # the clone, where the private PostgreSQL clusters' initdb (run as postgres) cannot go.
        database = Path(session.virtualenv.location) / "tests.sqlite3"
        env["CUSTOMERSYNC_TEST_DATABASE_URL"] = f"sqlite:///{database}"
        args = ["-m", "not postgresql", *args]
    session.install("--upgrade", "pip>=25.1")  # dependency groups
    session.install("-e", ".", "--group", "test", *pins)
    session.run(
        "python",
        "-c",
        "import sys, django, celery, kombu, requests; "
        "print(f'versions: Python {sys.version.split()[0]}, Django {django.__version__}, "
        "Celery {celery.__version__}, kombu {kombu.__version__}, requests {requests.__version__}')",
    )
    session.run(
        "python",
        "-m",
        "pytest",
        *args,
        env=env,
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, mypy, the documentation (warnings are errors), and the built distributions as a site would
    install them."""
    session.install("--upgrade", "pip>=25.1")
    session.install("--group", "lint", "--group", "docs", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    html = Path(session.create_tmp()) / "docs-html"
    shutil.rmtree(html, ignore_errors=True)
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(html))
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    artifacts = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *artifacts)
    session.run("python", "scripts/check_dist.py", *artifacts)
