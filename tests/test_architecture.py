"""The direction of imports between assay's packages, read from the source with ``ast``.

web/ and cli/ are shells over the domains; the domains sit on store/; a domain imports only the
domains listed for it in ``ALLOWED`` (what the code does now, and acyclic), so a score request and
a training run walk down through the packages without climbing back. Every import counts: at
module level, inside a function, or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"

SHELLS = {"web", "cli"}
STORE = "store"
DOMAINS = {
    "engines",
    "modelling",
    "monitoring",
    "registry",
    "retraining",
    "review",
    "serving",
    "unlearning",
}
# Top-level modules: the foundation any package may import (errors, settings, the home secret,
# the pages' templates, the heap long operations freeze), the workspace (a home's store and
# registry, opened together), and the quickstart example (a shell's).
FOUNDATION = {"__init__", "errors", "settings", "home_secret", "templating", "heap"}
COMPOSITION = {"workspace": {"registry", STORE}, "quickstart": set()}

# Which domains each domain may import (besides store and the foundation).
ALLOWED: dict[str, set[str]] = {
    "engines": set(),
    "registry": set(),
    "serving": {"engines", "registry", "workspace"},
    "modelling": {"engines", "registry", "serving"},
    "review": {"modelling", "registry", "serving", "workspace"},
    "monitoring": {"engines", "modelling", "registry", "review", "serving"},
    "unlearning": {"engines", "modelling", "monitoring", "registry", "review", "serving"},
    "retraining": {"engines", "modelling", "monitoring", "registry", "review", "unlearning", "workspace"},
}


def _package(path: Path, src: Path = SRC) -> str:
    """The package (or top-level module) a source file belongs to."""
    parts = path.relative_to(src).with_suffix("").parts
    return parts[0]


def _imported(tree: ast.AST, module: str) -> Iterator[tuple[int, str]]:
    """(line, package) of every assay import in ``tree``; ``from assay import x`` names ``x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}:{node.lineno}: a relative import hides its direction"
            base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names] if base == "assay" else [base]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "assay" and len(parts) > 1:
                yield node.lineno, parts[1]


def import_graph(src: Path = SRC) -> dict[str, dict[str, str]]:
    """package -> {imported package: where (file:line, the first place)}, between different packages."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(src.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):  # protoc's output imports only grpc/protobuf
            continue
        source = _package(path, src)
        for line, target in _imported(ast.parse(path.read_text(), str(path)), str(path)):
            if target != source:
                graph.setdefault(source, {}).setdefault(target, f"{path.relative_to(src.parent)}:{line}")
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle through the graph, each as the path that closes it (depth-first)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def violations(graph: dict[str, dict[str, str]]) -> list[str]:
    """The imports that break the layering, each with where it is."""
    wrong = []
    for source, targets in sorted(graph.items()):
        for target, where in sorted(targets.items()):
            if target in FOUNDATION or source in SHELLS:
                continue
            if source == STORE or source in FOUNDATION:
                allowed: set[str] = set()
            elif source in COMPOSITION:
                allowed = COMPOSITION[source]
            elif source in DOMAINS:
                allowed = ALLOWED[source] | {STORE}
            else:
                raise AssertionError(f"{source} is neither a shell, a domain, the store nor listed here")
            if target not in allowed:
                wrong.append(f"{where}: {source} imports {target}")
    return wrong


def test_every_package_is_placed_in_a_layer() -> None:
    packages = {_package(path) for path in SRC.rglob("*.py")}
    assert packages <= SHELLS | DOMAINS | FOUNDATION | set(COMPOSITION) | {STORE}
    assert set(ALLOWED) == DOMAINS


def test_imports_point_down_the_layers() -> None:
    assert violations(import_graph()) == []


def test_no_package_imports_itself_back() -> None:
    graph = {source: set(targets) for source, targets in import_graph().items()}
    assert cycles(graph) == []
    assert cycles({**ALLOWED, **COMPOSITION}) == []  # the allowed directions are a hierarchy


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"store/db.py": "from assay.registry import versions\n"}, "store imports registry"),
        ({"registry/x.py": "def f():\n    from assay.web import app\n"}, "registry imports web"),
        ({"serving/x.py": "import assay.cli\n"}, "serving imports cli"),
        ({"registry/x.py": "from assay import review\n"}, "registry imports review"),
    ],
)
def test_a_wrong_import_is_named(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    src = _write(tmp_path / "assay", files)
    assert [line.split(": ", 1)[1] for line in violations(import_graph(src))] == [expected]


def test_a_circle_is_found(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "assay",
        {"registry/a.py": "from assay.serving import b\n", "serving/b.py": "from assay.registry import a\n"},
    )
    graph = {source: set(targets) for source, targets in import_graph(src).items()}
    assert cycles(graph) == [["registry", "serving", "registry"]]
