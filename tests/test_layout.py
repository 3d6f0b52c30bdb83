"""The shape of the core package: imports at the top, no cycle, modules of a readable size, tests mirroring folders.

Pure and fast: reads the source files only, imports nothing from shared/.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "shared"
TESTS = REPO / "tests"
MAX_LINES = 500
# A module may be longer when its docstring has a line starting with this, saying why.
LONGER_BECAUSE = "Longer than"
# Comments that silence a tool say nothing about why the import is late.
PRAGMAS = ("noqa", "type:", "pragma", "fmt:")

MODULES = sorted(SHARED.rglob("*.py"))
FOLDERS = sorted(path.parent for path in SHARED.glob("*/**/__init__.py"))


def name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def explaining_comment_lines(source: str) -> set[int]:
    """Line numbers that carry a comment other than a tool pragma."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not token.string.lstrip("# ").startswith(PRAGMAS):
            lines.add(token.start[0])
    return lines


def imports_inside_functions(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            found.extend(node for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom))
    return sorted(set(found), key=lambda node: node.lineno)


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_a_late_import_says_why(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    commented = explaining_comment_lines(source)
    unexplained = [
        f"{name(path)}:{node.lineno}"
        for node in imports_inside_functions(ast.parse(source))
        if not commented & {node.lineno, node.lineno - 1}
    ]
    assert not unexplained, (
        f"imports inside a function with no comment saying why: {unexplained}; "
        "move them to the top of the module, or add a one-line comment on or above the import"
    )


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_a_long_module_says_why(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    length = len(source.splitlines())
    if length <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert any(line.strip().startswith(LONGER_BECAUSE) for line in docstring.splitlines()), (
        f"{name(path)} has {length} lines (more than {MAX_LINES}): split it, or add a line starting "
        f"'{LONGER_BECAUSE} {MAX_LINES} lines because ...' to its docstring"
    )


@pytest.mark.parametrize("folder", FOLDERS, ids=name)
def test_every_folder_of_shared_has_a_test_folder(folder: Path) -> None:
    mirror = TESTS / folder.relative_to(SHARED)
    # a folder of folders (shared/features) is mirrored by the tests of its subfolders
    tests = sorted(mirror.rglob("test_*.py"))
    assert tests, f"{name(folder)} has no tests in {name(mirror)}/: its tests belong there"
    assert (mirror / "__init__.py").exists(), f"{name(mirror)}/ needs an __init__.py, as every test folder has"


def test_no_module_reaches_itself_through_its_imports() -> None:
    """lint-imports finds cycles between siblings; this also finds one through a package's __init__."""
    graph = grimp.build_graph("shared", include_external_packages=False)
    cycles = sorted(
        f"{module} -> {' -> '.join(chain)}"
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if (chain := graph.find_shortest_chain(importer=imported, imported=module))
    )
    assert not cycles, "import cycles (break each by moving the shared part down a layer):\n" + "\n".join(cycles)


def test_the_checks_see_the_package() -> None:
    assert len(MODULES) >= 20 and len(FOLDERS) >= 6, (MODULES, FOLDERS)
