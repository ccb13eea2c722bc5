#!/usr/bin/env python3
"""Check the built sdist and wheel as a site would receive them.

Usage: scripts/check_dist.py DIST_FILE... (run by ``nox -s lint`` after ``python -m build``).
Fails, naming what is wrong, when the license or the type marker is missing,
when something development-only would be installed with the app, or when a
classifier is not a real trove classifier.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser

from trove_classifiers import classifiers as KNOWN_CLASSIFIERS

# What a site installs with the app, and nothing else (the rest are dependency groups).
RUNTIME = {"django", "celery", "kombu", "requests"}
OPTIONAL = {"redis": {"celery"}, "prometheus": {"prometheus-client"}}


def check_wheel(path: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    for wanted in ("py.typed", "templates/", "static/", "migrations/"):
        wanted = f"customersync/{wanted}"
        if not any(n.startswith(wanted) for n in names):
            problems.append(f"{path}: no {wanted}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append(f"{path}: no LICENSE")
    strays = sorted({n.split("/")[0] for n in names} - {"customersync", metadata_name.split("/")[0]})
    if strays:
        problems.append(f"{path}: ships more than the app: {strays}")

    for requirement in metadata.get_all("Requires-Dist") or []:
        name = requirement.split(";")[0].strip()
        name = name.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
        extra = requirement.split("extra ==")[1].strip().strip("'\"") if "extra ==" in requirement else None
        allowed = RUNTIME if extra is None else OPTIONAL.get(extra, set())
        if name not in allowed:
            problems.append(f"{path}: a site would install {requirement!r} (extra {extra!r})")
    for field in ("Author", "License-Expression", "Project-URL", "Requires-Python"):
        if not (metadata.get_all(field) or (field == "Author" and metadata.get("Author-email"))):
            problems.append(f"{path}: no {field} in the metadata")
    for classifier in metadata.get_all("Classifier") or []:
        if classifier not in KNOWN_CLASSIFIERS:
            problems.append(f"{path}: unknown classifier {classifier!r}")
    return problems


def check_sdist(path: str) -> list[str]:
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    return [f"{path}: no {wanted}" for wanted in ("LICENSE", "README.md", "pyproject.toml") if wanted not in names]


def main(paths: list[str]) -> int:
    problems = []
    kinds = set()
    for path in paths:
        if path.endswith(".whl"):
            problems += check_wheel(path)
            kinds.add("wheel")
        elif path.endswith(".tar.gz"):
            problems += check_sdist(path)
            kinds.add("sdist")
    if kinds != {"wheel", "sdist"}:
        problems.append(f"expected a wheel and an sdist, got {paths}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"check-dist: {', '.join(paths)} look right")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
