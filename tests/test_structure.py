"""The app's shape: no import circle, a Celery-free core, one owner of the sync status."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "customersync"
MODULES = sorted(p for p in APP.rglob("*.py") if "migrations" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(p): p for p in MODULES}


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under ``if TYPE_CHECKING:`` (never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path) -> set[str]:
    """Every module of the app that ``path`` imports, at any depth (functions included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("customersync"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in NAMES else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("customersync")}
    return {name for name in found if name in NAMES} - {module_name(path)}


GRAPH = {name: imports_of(path) for name, path in NAMES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        trail.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return [*trail[trail.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        trail.pop()
        state[name] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circle_among_the_apps_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_sees_imports_inside_functions():
    # The check above would be blind if function-level imports were missed.
    assert "customersync.validation" in GRAPH["customersync.models.customer"]


def test_the_fake_server_does_not_lean_on_the_apps_table():
    # It is the independent check on the app: only the wire encoding is shared.
    # (The pytest plugin is the glue between the two, for sites' tests.)
    for name, targets in GRAPH.items():
        if name.startswith("customersync.testing") and name != "customersync.testing.pytest_plugin":
            outside = {t for t in targets if not t.startswith("customersync.testing")}
            assert outside <= {"customersync.wire"}, (name, outside)


def test_models_and_the_pure_core_import_without_celery():
    code = """
import sys
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "customersync"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)
django.setup()
import customersync.models, customersync.diff, customersync.wire, customersync.params, customersync.merge
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("celery", "kombu"))
print("celery modules:", loaded)
assert not loaded
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pure_core_imports_nothing_from_django():
    for name in ("customersync.params", "customersync.diff", "customersync.wire", "customersync.merge"):
        tree = ast.parse(NAMES[name].read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in modules if m and m.split(".")[0] in ("django", "celery", "kombu")}, name


def test_only_the_models_write_the_sync_status():
    writers = []
    for path in MODULES:
        if path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    elements = target.elts if isinstance(target, ast.Tuple) else [target]
                    if any(isinstance(e, ast.Attribute) and e.attr == "sync_status" for e in elements):
                        writers.append(f"{path.name}:{node.lineno}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("update", "bulk_update", "create") and any(
                    k.arg == "sync_status" for k in node.keywords
                ):
                    writers.append(f"{path.name}:{node.lineno}")
    assert not writers, f"sync_status written outside the models' transitions: {writers}"
