"""The demo site's settings: public demo secrets run the demo, never a site with DEBUG off.

And nothing a site copies from the quick start (the README and the tutorial) uses them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.test_quickstart import REPO, quickstart_blocks

LOAD = "import project.settings as s; print('loaded', s.DEBUG, s.SECRET_KEY, s.CUSTOMERSYNC['WEBHOOK_SECRET'])"
OWN = {"DJANGO_SECRET_KEY": "an-own-secret-0123456789", "STRIPE_WEBHOOK_SECRET": "whsec_own"}

# (environment, what the settings do: "loaded ..." or the ImproperlyConfigured message's start)
CASES = {
    "demo-defaults": ({}, "loaded True demo-only-not-secret whsec_demo"),
    "debug-off-demo-key": ({"DJANGO_DEBUG": "0"}, "DEBUG is off and SECRET_KEY is the demo's public one"),
    "debug-off-demo-key-set-explicitly": (
        {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "demo-only-not-secret", "STRIPE_WEBHOOK_SECRET": "whsec_own"},
        "DEBUG is off and SECRET_KEY is the demo's public one",
    ),
    "debug-off-demo-webhook-secret": (
        {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "an-own-secret-0123456789"},
        "DEBUG is off and the webhook secret is the demo's public one",
    ),
    "debug-off-any-other-value": ({"DJANGO_DEBUG": "false"}, "DEBUG is off and SECRET_KEY is the demo's public one"),
    "debug-off-own-secrets": ({"DJANGO_DEBUG": "0", **OWN}, "loaded False an-own-secret-0123456789 whsec_own"),
}


@pytest.mark.parametrize(("env", "outcome"), CASES.values(), ids=CASES.keys())
def test_demo_settings_refuse_their_public_secrets_with_debug_off(tmp_path, env, outcome):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STRIPE_", "DEMO_"))}
    clean.update(env, DEMO_VAR_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", LOAD], cwd=REPO, env=clean, capture_output=True, text=True)
    if outcome.startswith("loaded"):
        assert result.returncode == 0 and result.stdout.strip() == outcome, result.stderr
    else:
        assert result.returncode != 0
        assert f"django.core.exceptions.ImproperlyConfigured: {outcome}" in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["demo-only-not-secret", "whsec_demo", "sk_test_demo", "DJANGO_DEBUG", "project."])
def test_the_readme_quick_start_uses_none_of_the_demo_values(value):
    blocks = quickstart_blocks()
    assert blocks, "no quick-start blocks found in the README or the tutorial"
    assert [name for name, body in blocks.items() if value in body] == []
