"""The reference pages document what the code has: a setting, a system check, a signal, a command or
an option added without its entry fails here, and so does an entry left for something removed.

The pages are read as Markdown text (no Sphinx): ``docs/reference/settings.md``, ``checks.md``,
``signals.md`` and ``commands.md``. What the code has is read from the code itself: the settings'
defaults (``conf.DEFAULTS``) and a platform's keys (``accounts.PLATFORM_KEYS``); the check ids in
``id="customersync...."`` arguments anywhere in the package, found with ``ast`` without running a
check; the ``Signal`` objects of ``customersync.signals``; the commands in
``customersync/management/commands`` and the options of their parsers, less Django's common ones.

Each checker returns its problems as lines; the tests after the page tests add one undocumented
item of each kind and assert that the checker names it.
"""

from __future__ import annotations

import ast
import itertools
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.core.management import find_commands, load_command_class
from django.core.management.base import BaseCommand
from django.dispatch import Signal

import customersync
from customersync import signals
from customersync.accounts import PLATFORM_KEYS
from customersync.conf import DEFAULTS
from tests.support import REPO

REFERENCE = REPO / "docs" / "reference"
PACKAGE = Path(customersync.__file__).resolve().parent
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
CODE = re.compile(r"`([^`]+)`")


# -- reading the pages ---------------------------------------------------------------------------


def page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced blocks (``` and :::), where a '#' starts no heading."""
    lines, fence = [], ""
    for line in text.splitlines():
        stripped = line.lstrip()
        marker = next((m for m in ("```", ":::") if stripped.startswith(m)), "")
        if marker and not fence:
            fence = marker
            continue
        if marker and fence and stripped.rstrip() == marker:
            fence = ""
            continue
        if not fence:
            lines.append(line)
    return lines


def headings(text: str, level: int) -> list[str]:
    found = []
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match and len(match[1]) == level:
            found.append(match[2])
    return found


def sections(text: str, level: int) -> dict[str, list[str]]:
    """Each heading of ``level`` and the lines under it, up to the next heading of that level or above."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match and len(match[1]) <= level:
            current = found.setdefault(match[2], []) if len(match[1]) == level else None
            continue
        if current is not None:
            current.append(line)
    return found


def table_rows(text: str, anchor: str) -> dict[str, list[str]]:
    """The rows of tables whose first cell links to ``#<anchor>...``: the linked name -> the other cells."""
    rows = {}
    pattern = re.compile(r"^\|\s*\[`([^`]+)`\]\(#" + re.escape(anchor))
    for line in prose_lines(text):
        match = pattern.match(line)
        if match:
            rows[match[1]] = [cell.strip() for cell in line.strip().strip("|").split("|")[1:]]
    return rows


def label(prefix: str, name: str) -> str:
    return f"({prefix}-{name.lower().replace('_', '-').replace('.', '-')})="


def literal(cell: str) -> Any:
    """The first code span of ``cell`` as a Python value (``"paced"``, ``None``, ``()``...)."""
    match = CODE.search(cell)
    if match is None:
        raise ValueError(f"no code span in {cell!r}")
    return ast.literal_eval(match[1])


def same(documented: Any, value: Any) -> bool:
    return type(documented) is type(value) and documented == value


# -- settings ------------------------------------------------------------------------------------


def settings_problems(text: str, defaults: Mapping[str, Any], platform_keys: Iterable[str]) -> list[str]:
    """Every key of ``defaults`` has its label, heading, overview row and default in settings.md (twice:
    the overview and its section); every key of a platform its label, heading and row; and the page
    documents no key the code does not have."""
    problems = []
    level3 = headings(text, 3)
    top = {m[1] for h in level3 if (m := re.fullmatch(r"`([A-Z_]+)`", h))}
    per_platform = {m[1] for h in level3 if (m := re.fullmatch(r"`([A-Z_]+)` of a platform", h))}
    rows = table_rows(text, "setting-")
    platform_rows = table_rows(text, "platform-setting-")
    bodies = sections(text, 3)
    for key, value in defaults.items():
        where = f"CUSTOMERSYNC[{key!r}]"
        if key not in top:
            problems.append(f"{where}: no heading '### `{key}`'")
        if label("setting", key) not in text:
            problems.append(f"{where}: no label {label('setting', key)}")
        if key not in rows:
            problems.append(f"{where}: no row in the overview table")
        elif not same(documented := literal(rows[key][0]), value):
            problems.append(f"{where}: the overview's default is {documented!r}, the code's {value!r}")
        stated = [line for line in bodies.get(f"`{key}`", []) if line.startswith("- Default:")]
        if key in top and not stated:
            problems.append(f"{where}: its section has no '- Default:' line")
        elif stated and not same(documented := literal(stated[0]), value):
            problems.append(f"{where}: its section's default is {documented!r}, the code's {value!r}")
    for key in sorted(set(platform_keys)):
        where = f"CUSTOMERSYNC['PLATFORMS'][name][{key!r}]"
        if key not in per_platform:
            problems.append(f"{where}: no heading '### `{key}` of a platform'")
        if label("platform-setting", key) not in text:
            problems.append(f"{where}: no label {label('platform-setting', key)}")
        if key not in platform_rows:
            problems.append(f"{where}: no row in the table of a platform's keys")
    for key in sorted((top | set(rows)) - set(defaults)):
        problems.append(f"CUSTOMERSYNC[{key!r}] is documented, but conf.DEFAULTS has no such key")
    for key in sorted((per_platform | set(platform_rows)) - set(platform_keys)):
        problems.append(f"a platform's {key!r} is documented, but accounts.PLATFORM_KEYS has no such key")
    return problems


def test_every_setting_and_every_key_of_a_platform_is_documented():
    problems = settings_problems(page("settings.md"), DEFAULTS, PLATFORM_KEYS)
    assert not problems, "docs/reference/settings.md:\n" + "\n".join(problems)


# -- system checks -------------------------------------------------------------------------------


def registered_check_ids(root: Path = PACKAGE) -> tuple[set[str], list[str]]:
    """The ``id="customersync...."`` keyword arguments of every call in the package's modules, and the
    ``id=`` arguments that are not a plain string (which this scan cannot read, so they are problems)."""
    ids: set[str] = set()
    unreadable: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg != "id":
                    continue
                value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    if value.value.startswith("customersync."):
                        ids.add(value.value)
                elif _is_check_message(node):
                    unreadable.append(f"{path.relative_to(root.parent)}:{node.lineno}: an id that is not a string")
    return ids, unreadable


def _is_check_message(call: ast.Call) -> bool:
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    return name in {"Error", "Warning", "Critical", "Info", "Debug", "CheckMessage"}


def checks_problems(text: str, ids: Iterable[str]) -> list[str]:
    """Every id has its label, heading and overview row in checks.md, and the page documents no other id."""
    problems = []
    ids = set(ids)
    titled = {h for h in headings(text, 3) if re.fullmatch(r"customersync\.[A-Z]\d{3}", h)}
    rows = table_rows(text, "check-")
    for check_id in sorted(ids):
        short = check_id.split(".", 1)[1]
        if check_id not in titled:
            problems.append(f"{check_id}: no heading '### {check_id}'")
        if label("check", short) not in text:
            problems.append(f"{check_id}: no label {label('check', short)}")
        if check_id not in rows:
            problems.append(f"{check_id}: no row in the overview table")
    for check_id in sorted((titled | set(rows)) - ids):
        problems.append(f"{check_id} is documented, but no check of the package has that id")
    return problems


def test_every_system_check_id_is_documented():
    ids, unreadable = registered_check_ids()
    assert not unreadable, "\n".join(unreadable)
    assert {"customersync.E002", "customersync.W014", "customersync.E044"} <= ids  # the scan finds them
    problems = checks_problems(page("checks.md"), ids)
    assert not problems, "docs/reference/checks.md:\n" + "\n".join(problems)


# -- signals -------------------------------------------------------------------------------------


def signals_of(module: types.ModuleType) -> set[str]:
    return {name for name, value in vars(module).items() if isinstance(value, Signal)}


def signals_problems(text: str, names: Iterable[str]) -> list[str]:
    """Every signal has its label, heading and overview row in signals.md, and the page documents no other."""
    problems = []
    names = set(names)
    titled = {m[1] for h in headings(text, 2) if (m := re.fullmatch(r"`(\w+)`", h))}
    rows = table_rows(text, "signal-")
    for name in sorted(names):
        if name not in titled:
            problems.append(f"signals.{name}: no heading '## `{name}`'")
        if label("signal", name) not in text:
            problems.append(f"signals.{name}: no label {label('signal', name)}")
        if name not in rows:
            problems.append(f"signals.{name}: no row in the overview table")
    for name in sorted((titled | set(rows)) - names):
        problems.append(f"signals.{name} is documented, but customersync.signals has no such Signal")
    return problems


def test_every_signal_is_documented():
    problems = signals_problems(page("signals.md"), signals_of(signals))
    assert not problems, "docs/reference/signals.md:\n" + "\n".join(problems)


# -- management commands -------------------------------------------------------------------------


def common_options() -> set[str]:
    """What every command's parser has (Django's --verbosity, --settings, -h ...): not the app's to document."""
    parser = BaseCommand().create_parser("manage.py", "command")
    return {option for action in parser._actions for option in action.option_strings}


def command_arguments(name: str) -> set[str]:
    """The command's own option strings, and its positional arguments by their metavar (or name)."""
    parser = load_command_class("customersync", name).create_parser("manage.py", name)
    common = common_options()
    found = set()
    for action in parser._actions:
        if action.option_strings:
            found.update(option for option in action.option_strings if option not in common)
        else:
            found.add(str(action.metavar or action.dest))
    return found


def app_commands() -> list[str]:
    return sorted(find_commands(str(PACKAGE / "management")))


def documented_terms(lines: list[str]) -> set[str]:
    """The first word of each code span of a definition's term (a line before a line starting ': ')."""
    terms = set()
    for line, following in itertools.pairwise(lines):
        if line.startswith("`") and following.startswith(": "):
            terms.update(span.split()[0] for span in CODE.findall(line))
    return terms


def commands_problems(text: str, commands: Mapping[str, set[str]]) -> list[str]:
    """Every command has its label and section in commands.md, and each of its options and positional
    arguments a definition there; the page documents no other command or option."""
    problems = []
    bodies = {m[1]: lines for h, lines in sections(text, 2).items() if (m := re.fullmatch(r"`(\w+)`", h))}
    for name, arguments in sorted(commands.items()):
        if label("command", name) not in text:
            problems.append(f"{name}: no label {label('command', name)}")
        if name not in bodies:
            problems.append(f"{name}: no section '## `{name}`'")
            continue
        terms = documented_terms(bodies[name])
        for argument in sorted(arguments - terms):
            problems.append(f"{name} {argument}: no definition in the command's section")
        for argument in sorted(terms - arguments):
            problems.append(f"{name} {argument} is documented, but the command's parser has no such argument")
    for name in sorted(set(bodies) - set(commands)):
        problems.append(f"{name} is documented, but customersync has no such command")
    return problems


def test_every_command_and_option_is_documented():
    commands = {name: command_arguments(name) for name in app_commands()}
    assert {"customersync_pull", "customersync_push", "customersync_link", "customersync_sweep"} <= set(commands)
    problems = commands_problems(page("commands.md"), commands)
    assert not problems, "docs/reference/commands.md:\n" + "\n".join(problems)


# -- each checker names what is added undocumented -----------------------------------------------


def test_a_setting_added_without_its_entry_is_named():
    problems = settings_problems(page("settings.md"), {**DEFAULTS, "ARCHIVE_AFTER": 30}, PLATFORM_KEYS)
    assert problems == [
        "CUSTOMERSYNC['ARCHIVE_AFTER']: no heading '### `ARCHIVE_AFTER`'",
        "CUSTOMERSYNC['ARCHIVE_AFTER']: no label (setting-archive-after)=",
        "CUSTOMERSYNC['ARCHIVE_AFTER']: no row in the overview table",
    ]


def test_a_default_changed_without_its_entry_is_named():
    problems = settings_problems(page("settings.md"), {**DEFAULTS, "TIMEOUT": 25.0}, PLATFORM_KEYS)
    assert problems == [
        "CUSTOMERSYNC['TIMEOUT']: the overview's default is 20.0, the code's 25.0",
        "CUSTOMERSYNC['TIMEOUT']: its section's default is 20.0, the code's 25.0",
    ]


def test_a_key_of_a_platform_added_without_its_entry_is_named():
    problems = settings_problems(page("settings.md"), DEFAULTS, {*PLATFORM_KEYS, "API_BASE"})
    assert problems == [
        "CUSTOMERSYNC['PLATFORMS'][name]['API_BASE']: no heading '### `API_BASE` of a platform'",
        "CUSTOMERSYNC['PLATFORMS'][name]['API_BASE']: no label (platform-setting-api-base)=",
        "CUSTOMERSYNC['PLATFORMS'][name]['API_BASE']: no row in the table of a platform's keys",
    ]


def test_a_setting_removed_from_the_code_but_documented_is_named():
    defaults = {key: value for key, value in DEFAULTS.items() if key != "QUEUE"}
    assert settings_problems(page("settings.md"), defaults, PLATFORM_KEYS) == [
        "CUSTOMERSYNC['QUEUE'] is documented, but conf.DEFAULTS has no such key"
    ]


def test_a_check_added_without_its_entry_is_named(tmp_path):
    (tmp_path / "checks.py").write_text(
        "from django.core.checks import Warning, register\n\n\n"
        "@register()\n"
        "def check_archive(app_configs=None, **kwargs):\n"
        '    return [Warning("Archived customers are kept forever.", id="customersync.W090")]\n'
    )
    ids, unreadable = registered_check_ids(tmp_path)
    assert (ids, unreadable) == ({"customersync.W090"}, [])
    problems = checks_problems(page("checks.md"), registered_check_ids()[0] | ids)
    assert problems == [
        "customersync.W090: no heading '### customersync.W090'",
        "customersync.W090: no label (check-w090)=",
        "customersync.W090: no row in the overview table",
    ]


def test_a_check_id_the_scan_cannot_read_is_named(tmp_path):
    (tmp_path / "checks.py").write_text(
        "from django.core.checks import Error\n\n"
        "def check_archive(app_configs=None, **kwargs):\n"
        '    return [Error("...", id=f"customersync.E{90}")]\n'
    )
    assert registered_check_ids(tmp_path) == (set(), [f"{tmp_path.name}/checks.py:4: an id that is not a string"])


def test_a_signal_added_without_its_entry_is_named(monkeypatch):
    monkeypatch.setattr(signals, "customer_archived", Signal(), raising=False)
    assert signals_problems(page("signals.md"), signals_of(signals)) == [
        "signals.customer_archived: no heading '## `customer_archived`'",
        "signals.customer_archived: no label (signal-customer-archived)=",
        "signals.customer_archived: no row in the overview table",
    ]


@pytest.mark.parametrize("name", ["customersync_sweep", "customersync_push"])
def test_an_option_added_without_its_entry_is_named(monkeypatch, name):
    command = type(load_command_class("customersync", name))
    real = command.add_arguments

    def with_another(self, parser):
        real(self, parser)
        parser.add_argument("--batch-limit", type=int, help="Stop after this many.")

    monkeypatch.setattr(command, "add_arguments", with_another)
    commands = {other: command_arguments(other) for other in app_commands()}
    assert "--batch-limit" in commands[name]
    assert commands_problems(page("commands.md"), commands) == [
        f"{name} --batch-limit: no definition in the command's section"
    ]


def test_a_command_added_without_its_section_is_named():
    commands = {name: command_arguments(name) for name in app_commands()}
    commands["customersync_archive"] = {"--older-than"}
    assert commands_problems(page("commands.md"), commands) == [
        "customersync_archive: no label (command-customersync-archive)=",
        "customersync_archive: no section '## `customersync_archive`'",
    ]
