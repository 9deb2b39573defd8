"""The package layering, checked on the source with ``ast``: which package may import which.

Ranks; a module may import its own package and packages of a lower rank, nothing else:

    0  layers, catalog
    1  models
    2  cost, formats, report
    3  train, export, convert, lab, analysis
    4  search
    5  cli

Packages of the same rank do not import each other either (train and export, say, both build on
formats and cost; a sideways import would tie one to the other, and two would make a cycle).
``analysis`` is at rank 3 because it is an application like ``lab``: the zoo table measures
models with cost's tools; its shared helpers (tables, pyplot) live in ``report``, at rank 2.
``search`` sits above ``train``: NetAdapt and architecture search fine-tune every candidate
with ``fit`` (in memory), so they build on training the way training builds on the models.

Outside the ranking: the top-level ``lightnets/__init__.py`` may import any package below cli,
and only cli (the top, for ``__version__``) may import it back; ``lightnets/__main__.py`` runs
cli; ``lightnets/testing.py`` may import any package below cli, and no package imports it.

Also: no import cycles between packages, and no import of a ``_private`` name or module from
another package. Imports inside functions count (a lazy import is still a dependency), and so
do ``importlib.import_module("lightnets...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import lightnets

RANKS = {
    "layers": 0, "catalog": 0,
    "models": 1,
    "cost": 2, "formats": 2, "report": 2,
    "train": 3, "export": 3, "convert": 3, "lab": 3, "analysis": 3,
    "search": 4,
    "cli": 5,
}
TOP = max(RANKS.values())
ROOT = "lightnets"  # the top-level package's own __init__
OUTSIDE = {ROOT, "testing", "__main__"}
SOURCE = Path(lightnets.__file__).parent


@dataclass(frozen=True)
class Import:
    file: str  # e.g. lightnets/cli/main.py
    line: int
    target: str  # the imported module, e.g. lightnets.formats.checkpoint
    names: tuple[str, ...] = ()  # from TARGET import NAMES

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _module(file: str) -> tuple[str, bool]:
    """The dotted module name of a source path, and whether it is a package's ``__init__``."""
    parts = file.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def package_of(module: str) -> str:
    """The top-level lightnets package a module belongs to: ``lightnets.cli.main`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports_of(file: str, source: str) -> Iterator[Import]:
    """Every import of a lightnets module in ``source`` (the file at ``file``), relative ones resolved."""
    module, is_package = _module(file)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, file)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lightnets":
                    yield Import(file, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "lightnets":
                continue
            for alias in node.names:
                # ``from .. import models`` imports a package, not a name of the top-level __init__
                is_package = node.module is None and target == "lightnets" and alias.name in RANKS.keys() | OUTSIDE
                yield Import(file, node.lineno, f"{target}.{alias.name}" if is_package else target, (alias.name,))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            name = node.args[0].value
            literal = isinstance(name, str) and name.split(".")[0] == "lightnets"
            if called in ("import_module", "__import__") and literal:
                yield Import(file, node.lineno, name)


def _allowed(source: str, target: str) -> bool:
    if source == "__main__":
        return True
    if target in ("testing", "__main__"):
        return False
    if target == ROOT:
        return RANKS.get(source) == TOP
    if source in (ROOT, "testing"):
        return RANKS[target] < TOP
    return RANKS[target] < RANKS[source]


def rank_violations(imports: list[Import]) -> list[str]:
    """Imports that go up or sideways, and packages that have no rank."""
    found = []
    for imp in imports:
        source, target = package_of(_module(imp.file)[0]), package_of(imp.target)
        unknown = [p for p in (source, target) if p not in RANKS and p not in OUTSIDE]
        if unknown:
            found.append(f"{imp.where}: package {unknown[0]!r} has no rank; add it to RANKS in tests/test_layering.py")
        elif source != target and not _allowed(source, target):
            ranks = f"rank {RANKS.get(source, 'outside')} -> rank {RANKS.get(target, 'outside')}"
            found.append(f"{imp.where}: {source} imports {imp.target} ({target}; {ranks})")
    return list(dict.fromkeys(found))  # one line per import statement, however many names it takes


def private_violations(imports: list[Import]) -> list[str]:
    """Imports of another package's ``_private`` names or modules."""
    found = []
    for imp in imports:
        if package_of(_module(imp.file)[0]) == package_of(imp.target):
            continue
        hidden = [p for p in imp.target.split(".") if _private(p)] + [n for n in imp.names if _private(n)]
        if hidden:
            owner = package_of(imp.target)
            found.append(f"{imp.where}: imports {', '.join(hidden)} from {imp.target}, private to {owner}")
    return found


def package_cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected groups of two or more packages in the package import graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        source, target = package_of(_module(imp.file)[0]), package_of(imp.target)
        graph.setdefault(source, set())
        graph.setdefault(target, set())
        if source != target:
            graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def collect(sources: Mapping[str, str]) -> list[Import]:
    return [imp for file, text in sorted(sources.items()) for imp in imports_of(file, text)]


def _sources() -> dict[str, str]:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40, f"found only {len(files)} files under {SOURCE}"
    return {f"lightnets/{p.relative_to(SOURCE).as_posix()}": p.read_text(encoding="utf8") for p in files}


def _report(title: str, found: list) -> str:
    return f"{len(found)} {title}:\n  " + "\n  ".join(map(str, found))


def test_every_import_goes_down_the_ranks():
    imports = collect(_sources())
    assert len(imports) > 100  # the parser sees the imports at all
    found = rank_violations(imports)
    assert not found, _report("imports against the layering (see the rule in this file's docstring)", found)


def test_no_import_cycles_between_packages():
    cycles = package_cycles(collect(_sources()))
    assert not cycles, _report("import cycles between packages", cycles)


def test_no_private_names_imported_across_packages():
    found = private_violations(collect(_sources()))
    assert not found, _report("imports of another package's private names", found)


def test_the_checker_flags_synthetic_violations():
    fake = {
        "lightnets/models/zoo.py": "from ..train import fit\n\n\ndef f():\n"
                                   "    from lightnets.cost.latency import _percentile\n",
        "lightnets/train/a.py": "from ..export import fuse, predict\n",
        "lightnets/export/b.py": "import importlib\nimportlib.import_module('lightnets.train.loop')\n",
        "lightnets/cost/c.py": "from ..layers import conv\nfrom . import _helpers\n",  # both allowed
        "lightnets/newpkg/d.py": "from ..models import create_model\n",
        "lightnets/lab/e.py": "from .. import __version__\n",
    }
    imports = collect(fake)
    assert rank_violations(imports) == [
        "lightnets/export/b.py:2: export imports lightnets.train.loop (train; rank 3 -> rank 3)",
        "lightnets/lab/e.py:1: lab imports lightnets (lightnets; rank 3 -> rank outside)",
        "lightnets/models/zoo.py:1: models imports lightnets.train (train; rank 1 -> rank 3)",
        "lightnets/models/zoo.py:5: models imports lightnets.cost.latency (cost; rank 1 -> rank 2)",
        "lightnets/newpkg/d.py:1: package 'newpkg' has no rank; add it to RANKS in tests/test_layering.py",
        "lightnets/train/a.py:1: train imports lightnets.export (export; rank 3 -> rank 3)",
    ]
    assert private_violations(imports) == [
        "lightnets/models/zoo.py:5: imports _percentile from lightnets.cost.latency, private to cost",
    ]
    assert package_cycles(imports) == [["export", "train"]]
