"""Prints the import graph of shared/: one line per module with the shared modules it imports, grouped by layer.

The layers are read from the import-linter "layers" contract in pyproject.toml, so this and CI agree.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "shared"


def layers() -> list[list[str]]:
    """The layers of the contract, highest first, each a list of sibling packages or modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers":
            return [[name.strip() for name in layer.replace(":", "|").split("|")] for layer in contract["layers"]]
    raise SystemExit("pyproject.toml has no import-linter layers contract")


def layer_of(module: str, stack: list[list[str]]) -> int:
    for index, layer in enumerate(stack):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return index
    return len(stack)


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(PACKAGE, include_external_packages=False)
    stack = layers()
    by_layer: dict[int, list[str]] = {}
    for module in sorted(graph.modules):
        by_layer.setdefault(layer_of(module, stack), []).append(module)
    width = max(len(short(module)) for module in graph.modules)
    for index in sorted(by_layer):
        title = " | ".join(short(name) for name in stack[index]) if index < len(stack) else "(outside the layers)"
        print(f"== {title}")
        for module in by_layer[index]:
            imported = sorted(short(name) for name in graph.find_modules_directly_imported_by(module))
            print(f"  {short(module):<{width}}  {', '.join(imported) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
