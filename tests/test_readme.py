"""The README's links into the repository (the docs' pages, the screenshot) lead to files that exist,
so they work where the README is read: on the repository's page, from its own folder."""

from __future__ import annotations

import re

from tests.support import REPO

# Markdown links and images whose target is a path, not a URL or an anchor of the page itself.
LINK = re.compile(r"!?\[[^\]]*\]\((?!https?://|#|mailto:)(?P<path>[^)#\s]+)(?:#[^)]*)?\)")


def test_readme_links_lead_to_files_that_exist():
    targets = {match.group("path") for match in LINK.finditer((REPO / "README.md").read_text())}
    assert {"docs/installation.md", "docs/tutorial.md", "docs/images/admin-change-page.png"} <= targets
    assert sorted(path for path in targets if not (REPO / path).is_file()) == []
