"""The app's shape: its packages' layers, no import circle, a Celery-free core, one owner of the sync status.

The layers, read from every import of the app (inside functions too; not
under ``if TYPE_CHECKING:``):

- ``core/`` is pure: it imports no Django, Celery or kombu, and of the app
  only ``core/`` and ``exceptions``;
- ``stripe/`` imports no models (what a request needs arrives as arguments);
- ``push/`` takes from ``owner/`` only the mapping;
- nothing outside ``admin/`` imports ``admin/`` (Django's autodiscovery does);
- no module imports another package's ``_private`` name;
- the fake Stripe server (``testing/``) shares only the form encoding with the app.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "customersync"
MODULES = sorted(p for p in APP.rglob("*.py") if "migrations" not in p.parts)
PURE = ("django", "celery", "kombu")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(p): p for p in MODULES}


def package_of(name: str) -> str:
    """The package a module belongs to (a package's ``__init__`` belongs to the package itself)."""
    return name if NAMES[name].name == "__init__.py" else name.rpartition(".")[0]


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under ``if TYPE_CHECKING:`` (never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imported_names(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every import of ``path`` at any depth: ``name`` is what ``from module
    import name`` takes (None for ``import module``); relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(base, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


def imports_of(path: Path) -> set[str]:
    """Every module of the app that ``path`` imports, at any depth (functions included)."""
    found: set[str] = set()
    for base, name in imported_names(path):
        if not base.startswith("customersync"):
            continue
        candidate = f"{base}.{name}" if name else base
        found.add(candidate if candidate in NAMES else base)
    return {name for name in found if name in NAMES} - {module_name(path)}


GRAPH = {name: imports_of(path) for name, path in NAMES.items()}


def in_package(name: str, package: str) -> bool:
    return name == f"customersync.{package}" or name.startswith(f"customersync.{package}.")


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


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


# --------------------------------------------------------------------------
# the layers


def test_the_pure_core_imports_no_django_celery_or_kombu_and_of_the_app_only_itself():
    core = [name for name in NAMES if in_package(name, "core")]
    assert core, "no customersync.core package"
    for name in core:
        outside = {base for base, _ in imported_names(NAMES[name]) if base and base.split(".")[0] in PURE}
        assert not outside, (name, outside)
        app = {t for t in GRAPH[name] if not in_package(t, "core")}
        assert app <= {"customersync.exceptions"}, (name, app)


def test_the_stripe_package_imports_no_models():
    stripe = [name for name in NAMES if in_package(name, "stripe")]
    assert stripe, "no customersync.stripe package"
    for name in stripe:
        models = {t for t in reachable(name) if in_package(t, "models")}
        assert not models, f"{name} reaches the models through {sorted(models)}"


def test_the_push_takes_from_owner_only_the_mapping():
    for name in NAMES:
        if in_package(name, "push"):
            owner = {t for t in GRAPH[name] if in_package(t, "owner")}
            assert owner <= {"customersync.owner.mapping"}, (name, owner)


def test_nothing_imports_the_admin_package():
    # Django's admin autodiscovery imports customersync.admin; the app never does.
    for name, targets in GRAPH.items():
        if not in_package(name, "admin"):
            admin = {t for t in targets if in_package(t, "admin")}
            assert not admin, (name, admin)


def test_no_module_imports_another_packages_private_name():
    found = []
    for name, path in NAMES.items():
        for base, imported in imported_names(path):
            if base not in NAMES or not imported or not imported.startswith("_") or imported.startswith("__"):
                continue
            if package_of(base) != package_of(name):
                found.append(f"{name} imports {imported} from {base}")
    assert not found, found


def test_every_package_says_its_public_names():
    for name, path in NAMES.items():
        if path.name != "__init__.py" or name == "customersync" or "management" in name:
            continue
        tree = ast.parse(path.read_text())
        declares = any(
            isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
            for node in tree.body
        )
        assert declares or (ast.get_docstring(tree) or "").strip(), f"{name} says nothing of its public names"


def test_the_fake_server_does_not_lean_on_the_apps_table():
    # It is the independent check on the app: only the wire encoding is shared.
    # (The pytest plugin is the glue between the two, for sites' tests.)
    for name, targets in GRAPH.items():
        if name.startswith("customersync.testing") and name != "customersync.testing.pytest_plugin":
            outside = {t for t in targets if not t.startswith("customersync.testing")}
            assert outside <= {"customersync.core.encoding", "customersync.core"}, (name, outside)


# --------------------------------------------------------------------------
# the checks above can fail


def test_the_layer_checks_see_what_they_check():
    assert "customersync.core.encoding" in GRAPH["customersync.stripe.client"]
    assert any(in_package(t, "push") for t in reachable("customersync.sync"))
    assert package_of("customersync.push") == "customersync.push"


def test_the_graph_sees_imports_inside_functions():
    # The checks above would be blind if function-level imports were missed.
    inside = set()
    for name, path in NAMES.items():
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.ImportFrom) and node.level and node.module:
                        inside.add((name, node.module.split(".")[0]))
    assert inside, "no function-level import left to check the graph with"
    for name, first in inside:
        assert any(target.split(".")[1] == first or first in target for target in GRAPH[name]), (name, first)


def test_no_import_circle_among_the_apps_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_models_and_the_pure_core_reach_no_celery_or_kombu():
    """What the models and the core import, at any depth within the app, never imports Celery or
    kombu: they serve a site's migrations, forms and admin without the task queue. (Setting up
    the app loads Celery all the same: its receivers publish, and Celery's first import is made
    there, in one thread, not in the first of several threads saving at once.)"""
    starts = [name for name in NAMES if in_package(name, "models") or in_package(name, "core")]
    for start in starts:
        for name in {start, *reachable(start)}:
            queue_imports = {
                base for base, _ in imported_names(NAMES[name]) if base.split(".")[0] in ("celery", "kombu")
            }
            assert not queue_imports, f"{start} reaches {name}, which imports {sorted(queue_imports)}"


def test_the_celery_finder_sees_an_import_of_celery():
    outbox = NAMES["customersync.push.outbox"]
    assert ("celery", "current_app") in imported_names(outbox)


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
