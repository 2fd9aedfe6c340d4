"""The import contract: the layers the README shows, read from every import in the package,
including imports inside functions and under `TYPE_CHECKING`. No exception is listed.

Bottom to top: the site model, option rules, secrets and journal store; the step protocol;
playbook, plan and rules (pure, given the table of actions); the engine and its gate view
(know only the protocol); the action families (know only the protocol and the model); the
composition root; the faces. The lab stands beside, used only by faces (and tests, bench); it
talks to its stand-ins through the same clients the actions use.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ors_migrate"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

LAYER_OF_MODULE = {
    "": "model",
    "errors": "model",
    "yamlfile": "model",
    "site": "model",
    "options": "model",
    "secrets": "model",
    "journal": "model",
    "events": "model",
    "processes": "model",
    "statedir": "model",
    "estate_lock": "model",
    "userfiles": "model",
    "step": "protocol",
    "parallel": "protocol",
    "playbook": "planning",
    "plan": "planning",
    "stored_plan": "planning",
    "rules": "planning",
    "undo": "planning",
    "estimate": "planning",
    "engine": "engine",
    "gate": "engine",
    "interrupts": "engine",
    "context": "root",
    "runner": "root",
    "cli": "face",
    "__main__": "face",
    "wizard": "face",
    "demo": "face",
    "ui": "face",
    "report": "face",
    "render": "face",
    "preflight": "face",
    "rehearsal": "face",
}
LAYER_OF_PACKAGE = {"actions": "actions", "lab": "lab"}

# Which layers each layer may import (itself included).
ALLOWED = {
    "model": {"model"},
    "protocol": {"model", "protocol"},
    "planning": {"model", "protocol", "planning"},
    "engine": {"model", "protocol", "engine"},
    "actions": {"model", "protocol", "actions"},
    "root": {"model", "protocol", "planning", "engine", "actions", "root"},
    "face": {"model", "protocol", "planning", "engine", "actions", "root", "face", "lab"},
    "lab": {"model", "protocol", "actions", "lab"},
}
NETWORK_LIBRARIES = {"paramiko", "redis", "cassandra"}
MAY_USE_NETWORK = {"actions", "lab"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def layer_of(module: str) -> str:
    """The layer of `ors_migrate.x.y`; a module the contract does not know is an error."""
    relative = module.removeprefix(PACKAGE).removeprefix(".")
    package = relative.split(".")[0]
    if package in LAYER_OF_PACKAGE:
        return LAYER_OF_PACKAGE[package]
    if relative not in LAYER_OF_MODULE:
        raise AssertionError(f"{module} is in no layer: add it to the import contract")
    return LAYER_OF_MODULE[relative]


def read_package(root: Path = ROOT) -> dict[str, str]:
    """Every module's source by dotted name."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def _is_package(name: str, sources: Mapping[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def imports_of(name: str, source: str, sources: Mapping[str, str]) -> Iterator[Import]:
    """Every import anywhere in the module: top level, in functions, under TYPE_CHECKING."""
    package = name if _is_package(name, sources) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield Import(name, candidate if candidate in sources else base, node.lineno)


def all_imports(sources: Mapping[str, str]) -> list[Import]:
    return [i for name, src in sources.items() for i in imports_of(name, src, sources)]


def layer_violations(sources: Mapping[str, str]) -> list[str]:
    found = []
    for imp in all_imports(sources):
        top = imp.imported.split(".")[0]
        importer_layer = layer_of(imp.importer)
        if top == PACKAGE:
            imported_layer = layer_of(imp.imported)
            if imported_layer not in ALLOWED[importer_layer]:
                found.append(
                    f"{imp.importer}:{imp.line} ({importer_layer}) imports {imp.imported} "
                    f"({imported_layer})"
                )
        elif top in NETWORK_LIBRARIES and importer_layer not in MAY_USE_NETWORK:
            found.append(f"{imp.importer}:{imp.line} imports {imp.imported}")
    return found


def cycles(sources: Mapping[str, str]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), plus self-imports."""
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for imp in all_imports(sources):
        if imp.imported in graph and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_import_follows_the_layers() -> None:
    assert layer_violations(read_package()) == []


def test_there_is_no_import_cycle_in_the_package() -> None:
    assert cycles(read_package()) == []


def test_every_module_is_in_a_layer() -> None:
    for name in read_package():
        layer_of(name)


def test_the_contract_catches_the_engine_importing_an_action_family() -> None:
    sources = read_package()
    sources["ors_migrate.engine"] += (
        "\n\ndef _f():\n    from ors_migrate.actions.service import Restart\n"
    )
    found = layer_violations(sources)
    assert len(found) == 1
    assert "ors_migrate.engine:" in found[0]
    assert "imports ors_migrate.actions.service (actions)" in found[0]


def test_the_contract_catches_a_guarded_import_that_closes_a_cycle() -> None:
    sources = read_package()
    sources["ors_migrate.step"] += (
        "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from ors_migrate.plan import build_plan\n"
    )
    assert any("ors_migrate.step" in v for v in layer_violations(sources))
    assert any({"ors_migrate.plan", "ors_migrate.step"} <= set(group) for group in cycles(sources))


def test_the_contract_catches_a_network_library_outside_actions_and_lab() -> None:
    sources = read_package()
    sources["ors_migrate.plan"] += "\n\ndef _f():\n    import redis\n"
    assert layer_violations(sources) == [
        f"ors_migrate.plan:{sources['ors_migrate.plan'].count(chr(10))} imports redis"
    ]


def test_relative_imports_are_resolved() -> None:
    sources = {
        "ors_migrate": "",
        "ors_migrate.actions": "",
        "ors_migrate.actions.x": "from ..step import Action\nfrom . import y\n",
        "ors_migrate.actions.y": "",
        "ors_migrate.step": "",
    }
    found = {i.imported for i in all_imports(sources)}
    assert found == {"ors_migrate.step", "ors_migrate.actions.y"}
