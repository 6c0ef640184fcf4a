"""The layout of the package (docs/architecture.md): every module imports only its own layer or
the ones below it, never in a circle, and the installed package holds no tooling."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

PACKAGE = REPO / "aprrd_cli"
# from the bottom up; a module may import its own layer and those below
LAYERS = (
    ("aprrd_cli", "aprrd_cli.errors", "aprrd_cli.console"),
    ("aprrd_cli.utils",),
    ("aprrd_cli.device",),
    ("aprrd_cli.models",),
    ("aprrd_cli.losses",),
    ("aprrd_cli.data",),
    ("aprrd_cli.inference", "aprrd_cli.portable"),
    ("aprrd_cli.evaluation",),
    ("aprrd_cli.training",),
    ("aprrd_cli.denoise", "aprrd_cli.opening"),
    ("aprrd_cli.api", "aprrd_cli.export"),
    ("aprrd_cli.app", "aprrd_cli.commands", "aprrd_cli.cli", "aprrd_cli.demo", "aprrd_cli.__main__"),
)


# The one upward import allowed: the package's top level re-exports the public API (aprrd_cli/api.py)
# lazily, inside a module __getattr__, so `import aprrd_cli` and `aprrd --version` stay free of torch.
FACADE = {("aprrd_cli", "aprrd_cli.api")}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def imports(path: Path, known: dict[str, Path], package: str = "aprrd_cli") -> set[str]:
    """The modules of ``package`` that ``path`` imports, at the top or inside functions."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                deps.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.startswith(package))
    return {d for d in deps if d in known}


def layer(module: str) -> int:
    def within(p: str) -> bool:
        return module == p or (p != "aprrd_cli" and module.startswith(p + "."))

    found = [i for i, group in enumerate(LAYERS) for p in group if within(p)]
    assert found, f"{module} belongs to no layer of docs/architecture.md; add it there and here"
    return max(found)


def test_no_module_imports_upward() -> None:
    known = modules()
    upward = [
        f"{m} -> {d}"
        for m, p in sorted(known.items())
        for d in sorted(imports(p, known) - {m})
        if layer(d) > layer(m) and (m, d) not in FACADE
    ]
    assert upward == []


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk of ``graph``."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d) :], d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m, d in FACADE:  # lazy: the facade's import runs only when a public name is first used
        graph.get(m, set()).discard(d)
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_import_cycle() -> None:
    known = modules()
    assert cycles_of({m: imports(p, known) - {m} for m, p in known.items()}) == []


def test_no_import_cycle_in_the_tooling() -> None:
    """The benchmarks and experiments import each other's modules too (at the top or inside
    functions): no circle there either."""
    for package in ("benchmarks", "experiments"):
        known = modules(REPO / package)
        graph = {m: imports(p, known, package) - {m} for m, p in known.items()}
        assert cycles_of(graph) == [], package


def test_the_package_holds_no_tooling_and_cites_its_own_docs() -> None:
    assert not (PACKAGE / "bench").exists() and not (PACKAGE / "study").exists()
    assert (REPO / "benchmarks" / "__main__.py").is_file()
    assert (REPO / "experiments" / "study" / "__main__.py").is_file()
    stale = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "METHOD section" in p.read_text()]
    assert stale == []  # citations point at docs/method.md, which the repository holds
    assert (REPO / "docs" / "method.md").is_file() and (REPO / "docs" / "architecture.md").is_file()
