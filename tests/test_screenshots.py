"""The docs' screenshots of the admin show the admin as it is.

Every commit that changes the admin's code, templates or static files must be
in the history of the commit that last wrote each screenshot: the images were
taken with that admin (``scripts/screenshots`` takes them again). Judged by
the commits' ancestry rather than their clocks, so a rebase or a merge cannot
make a stale image pass.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support import REPO

SCREENSHOTS = (
    "docs/images/admin-change-page.png",
    "docs/images/admin-change-page-phone.png",
    "docs/images/admin-overview.png",
    "docs/images/admin-overview-phone.png",
)
ADMIN = ("customersync/admin", "customersync/templates", "customersync/static")


def git(*args: str) -> str:
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} has no git history: the screenshots' age is judged from it.")
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("image", SCREENSHOTS)
def test_screenshot_is_not_older_than_the_admin(image):
    taken = git("log", "-1", "--format=%H", "--", image)
    assert taken, f"{image} is not committed."
    later = git("log", "--format=%h %s", f"{taken}..HEAD", "--", *ADMIN)
    assert later == "", (
        f"{image} was taken before these commits changed the admin; run scripts/screenshots "
        f"and commit the images:\n{later}"
    )
