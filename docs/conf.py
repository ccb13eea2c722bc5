"""Sphinx configuration of customersync's documentation (``nox -s lint`` builds it with ``-W``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# autodoc imports the app's modules: a minimal site (docs/docs_settings.py), no database touched.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "docs_settings")
import django  # noqa: E402

django.setup()

import customersync  # noqa: E402

project = "customersync"
author = "The customersync developers"
copyright = "The customersync developers"  # noqa: A001 - Sphinx's name
release = customersync.__version__  # the one version, also read by the build (pyproject's hatch.version)
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_inventories"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"customersync {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"

# Each project's published inventory first; the local file lists the objects these pages name,
# so a build without the network (this project's CI machine) resolves them to the same pages.
intersphinx_mapping = {
    "django": (
        "https://docs.djangoproject.com/en/stable/",
        ("https://docs.djangoproject.com/en/stable/_objects/", "_inventories/django.txt"),
    ),
    "celery": (
        "https://docs.celeryq.dev/en/stable/",
        (None, "_inventories/celery.txt"),
    ),
    "requests": (
        "https://requests.readthedocs.io/en/latest/",
        (None, "_inventories/requests.txt"),
    ),
}
intersphinx_timeout = 5
