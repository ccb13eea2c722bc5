"""The quick start, run as a new user would: literally, from the pages that give it.

The README's quick start (install, settings, the Celery app, migrate and run,
the fake server) and the tutorial that continues it (docs/tutorial.md: an
``Organization`` that owns its customer, its admin, the webhook URL and the
site's own tests) are read block by block: each fenced block marked
``<!-- quickstart:NAME -->``, in exactly one of those pages, so the pages and
this test cannot drift. The test builds the wheel, installs it into a fresh
virtualenv with the extras the README names, makes a site with
``django-admin startproject mysite``, applies the settings and the Celery app as
written, and then: ``check`` is clean, ``migrate`` works, ``customersync_pull``
imports from the bundled fake server, and one saved change reaches that server
as exactly the changed parameter through a real worker. The tutorial's
organization gets its customer and its save pushes exactly the changed email;
the tutorial's tests (a save reaching Stripe, an address changed in the Billing
Portal coming back through the site's webhook endpoint) pass under pytest in
the site. Needs the package index (for the fresh virtualenv) and Redis.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.private_services import free_port

REPO = Path(__file__).resolve().parent.parent.parent
# Where the quick start lives: the README, and the tutorial that continues it.
QUICKSTART_PAGES = (REPO / "README.md", REPO / "docs" / "tutorial.md")
BLOCK = re.compile(r"<!-- quickstart:(?P<name>[\w-]+) -->\s*```\w*\n(?P<body>.*?)```", re.S)
BLOCK_NAMES = {
    *("install", "settings", "celery", "init", "run", "fake-stripe"),
    *("owner-model", "owner-settings", "owner-code", "owner-admin", "site-urls", "site-test"),
}

pytestmark = pytest.mark.quickstart


def quickstart_block_list() -> list[tuple[str, Path, str]]:
    """Every marked block of the quick start's pages: (name, page, body without its indent)."""
    blocks = []
    for page in QUICKSTART_PAGES:
        for match in BLOCK.finditer(page.read_text()):
            body = match.group("body")
            indent = min(len(line) - len(line.lstrip()) for line in body.splitlines() if line.strip())
            blocks.append((match.group("name"), page, "\n".join(line[indent:] for line in body.splitlines()) + "\n"))
    return blocks


def quickstart_blocks() -> dict[str, str]:
    """The blocks by name (``test_readme_has_every_quickstart_block`` holds each name to one block)."""
    return {name: body for name, _, body in quickstart_block_list()}


def test_readme_has_every_quickstart_block():
    """Every block the test runs is in the README or the tutorial, exactly once."""
    names = Counter(name for name, _, _ in quickstart_block_list())
    assert set(names) == BLOCK_NAMES
    assert {name: count for name, count in names.items() if count != 1} == {}


class Lines:
    """A process's output, line by line, with a wait for a matching line (an event, not a sleep)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        regex = re.compile(pattern)

        def found():
            return next((m for m in map(regex.search, self.lines) if m), None)

        with self._changed:
            self._changed.wait_for(lambda: found() or self.process.poll() is not None, timeout)
            match = found()
        if match is None:
            output = "\n".join(self.lines[-60:])
            raise AssertionError(f"no line matching {pattern!r} within {timeout:g}s; output:\n{output}")
        return match


class Site:
    """A fresh virtualenv and a startproject site in a temporary folder."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env
        self.background: list[subprocess.Popen] = []

    def run(self, command: str, cwd: Path | None = None, timeout: float = 600) -> str:
        result = subprocess.run(
            "set -euo pipefail\n" + command,
            shell=True,
            executable="/bin/bash",
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{command!r} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def start(self, command: str, cwd: Path | None = None) -> Lines:
        process = subprocess.Popen(
            shlex.split(command),
            cwd=cwd or self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.background.append(process)
        return Lines(process)

    def stop(self) -> None:
        for process in reversed(self.background):
            process.terminate()
        for process in self.background:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _broker_url() -> str:
    # The suite's Redis, in a database of its own (the e2e tests use the configured one).
    parts = urlsplit(settings.CELERY_BROKER_URL)
    return urlunsplit(parts._replace(path="/14"))


@pytest.fixture
def site(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CUSTOMERSYNC_", "CELERY_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["CELERY_BROKER_URL"] = _broker_url()
    import redis

    redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    site = Site(tmp_path, env)
    yield site
    site.stop()


def test_quickstart_as_written(site):
    blocks = quickstart_blocks()

    # 1. Install: the wheel from this checkout, into the fresh virtualenv.
    site.run(blocks["install"].replace("path/to/customersync", shlex.quote(str(REPO))))
    installed = site.run("python -m pip show django-customersync")
    assert f"Location: {site.root / 'venv'}" in installed  # the wheel, not this checkout

    site.run("django-admin startproject mysite")
    project = site.root / "mysite"
    package = project / "mysite"

    # 2. and 3.: settings, the Celery app and its import, as written.
    with open(package / "settings.py", "a") as settings_file:
        settings_file.write("\n" + blocks["settings"])
    (package / "celery.py").write_text(blocks["celery"])
    (package / "__init__.py").write_text(blocks["init"])

    # The tutorial's accounts app, its Organization and the organization's admin, linked
    # to the customers as the tutorial says: before the first migrate.
    site.run("python manage.py startapp accounts", cwd=project)
    (project / "accounts" / "models.py").write_text(blocks["owner-model"])
    (project / "accounts" / "admin.py").write_text(blocks["owner-admin"])
    with open(package / "settings.py", "a") as settings_file:
        settings_file.write("\n" + blocks["owner-settings"])
    output = site.run("python manage.py makemigrations accounts", cwd=project)
    assert "Create model Organization" in output and "Migrations for 'customersync'" not in output, output

    # The bundled fake Stripe server, as "Try it without a Stripe account" says,
    # on a free port rather than 12111.
    port = str(free_port())
    server = None
    for line in blocks["fake-stripe"].replace("12111", port).splitlines():
        if line.startswith("python -m customersync.testing"):
            assert line.endswith(" &")
            server = site.start(line.removesuffix(" &"), cwd=project)
            server.wait_for(r"fake-stripe: listening on ", timeout=30)
        elif line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            site.env[name] = value
        elif line.strip():
            site.run(line, cwd=project)
    assert server is not None and site.env.get("STRIPE_API_KEY")

    # A fresh site with the app installed as the quick start says: no warning at all.
    output = site.run("python manage.py check", cwd=project)
    assert "System check identified no issues (0 silenced)." in output, output
    assert "WARNING" not in output and "customersync." not in output, output

    # 4. Migrate, pull, worker and beat.
    worker = None
    for line in blocks["run"].splitlines():
        if line.startswith("celery "):
            started = site.start(line, cwd=project)
            worker = worker or started
        elif line.strip():
            site.run(line, cwd=project)
    server.wait_for(r"fake-stripe: GET /v1/customers\?\S*limit=100\S* 200", timeout=5)

    # One saved change, from code: exactly that parameter reaches Stripe.
    edit = (
        "from customersync.models import Customer; "
        "customer = Customer.objects.order_by('pk').last(); "
        "print('imported', Customer.objects.count()); "
        "customer.email = 'changed+1@example.com'; customer.save(); "
        "print('edited', customer.stripe_id)"
    )
    output = site.run(f"python manage.py shell -c {shlex.quote(edit)}", cwd=project)
    assert "imported 5" in output, output
    stripe_id = re.search(r"edited (cus_\w+)", output).group(1)
    match = server.wait_for(rf"fake-stripe: POST /v1/customers/{stripe_id} (\d+)(?: (.*))?$", timeout=60)
    assert match.groups() == ("200", "email=changed%2B1%40example.com")

    owner_quickstart(site, project, blocks, worker, port)
    site_test(site, project, blocks)


def owner_quickstart(site: Site, project: Path, blocks: dict[str, str], worker: Lines, port: str):
    """The tutorial's owner code, as written: the organization's customer is created, then its save pushes;
    the organization's admin page, with the tutorial's admin, shows its Stripe customer."""
    code = blocks["owner-code"] + "print('owned', org.pk, customer.pk, customer.stripe_id)\n"
    output = site.run(f"python manage.py shell -c {shlex.quote(code)}", cwd=project)
    owner_pk, pk, stripe_id = re.search(r"owned (\d+) (\d+) (cus_\w+)", output).groups()
    # The worker sends the new billing email, and nothing else.
    worker.wait_for(rf"Pushed {pk} \({stripe_id}\): Stripe confirmed", timeout=60)
    check = (
        "from customersync.models import Customer, PendingPush; "
        f"customer = Customer.objects.get(pk={pk}); "
        "print('state', customer.sync_status, customer.owner.billing_email, "
        "PendingPush.objects.filter(customer=customer, state='pending').count())"
    )
    output = site.run(f"python manage.py shell -c {shlex.quote(check)}", cwd=project)
    assert "state in_sync accounts@acme.example 0" in output, output  # nothing more to send
    # The control API takes the key the server takes (any sk_test_ key here) and its own header.
    url = f"http://127.0.0.1:{port}/_fake/requests"
    headers = {"Authorization": f"Bearer {site.env['STRIPE_API_KEY']}", "X-Fake-Stripe-Control": "1"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        received = json.load(answer)
    (create,) = [r for r in received if (r["method"], r["path"]) == ("POST", "/v1/customers")]
    assert "email=billing%40acme.example" in create["body"].split("&"), create
    updates = [r for r in received if (r["method"], r["path"]) == ("POST", f"/v1/customers/{stripe_id}")]
    assert [(r["status"], r["body"]) for r in updates] == [(200, "email=accounts%40acme.example")]
    # The organization's page in the admin: the mixin's section, with the customer in sync.
    page = (
        "from django.test import Client; from django.test.utils import setup_test_environment; "
        "from django.contrib.auth.models import User; setup_test_environment(); "
        "client = Client(); client.force_login(User.objects.create_superuser('admin', 'a@example.com', 'pw')); "
        f"response = client.get('/admin/accounts/organization/{owner_pk}/change/'); "
        "print('status', response.status_code); print(response.content.decode())"
    )
    output = site.run(f"python manage.py shell -c {shlex.quote(page)}", cwd=project)
    assert "status 200" in output, output
    assert "Stripe customer" in output and stripe_id in output and "In sync" in output, output


def site_test(site: Site, project: Path, blocks: dict[str, str]):
    """The tutorial's tests with the fake_stripe fixture, run by pytest in the site (pytest-django configured
    as the tutorial says): a save reaches Stripe, and a Billing Portal change comes back through the site's
    webhook endpoint, which the tutorial's lines add to ``mysite/urls.py``."""
    site.run('python -m pip install "pytest>=8,<10" "pytest-django>=4.9,<5"')
    (project / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = mysite.settings\n")
    with open(project / "mysite" / "urls.py", "a") as urls:
        urls.write("\n" + blocks["site-urls"])
    (project / "accounts" / "test_billing.py").write_text(blocks["site-test"])
    output = site.run("python -m pytest -v -p no:cacheprovider accounts/test_billing.py", cwd=project)
    assert re.search(r"^=+ 2 passed in ", output, re.M), output
    assert "test_address_changed_in_the_billing_portal_reaches_the_organization PASSED" in output, output
