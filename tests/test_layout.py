"""Imports go one way: services and calltrail_common know nothing of testing; the test kit
knows nothing of its users; tests, benchmarks and the fault suite never import each other
(tests may import the fault suite, which they run at small sizes).

    tests  -> calltrail_testkit, chaos        bench -> calltrail_testkit
    chaos  -> calltrail_testkit               calltrail_testkit -> the services' code

Read from the source with `ast` (every import statement, also inside functions), not by
importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Folder -> top-level packages its modules must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "tests": frozenset({"bench"}),
    "bench": frozenset({"tests", "chaos"}),
    "chaos": frozenset({"tests", "bench"}),
    "libs/testkit": frozenset({"tests", "bench", "chaos"}),
    "libs/common": frozenset({"calltrail_testkit", "tests", "bench", "chaos"}),
    "services": frozenset({"calltrail_testkit", "tests", "bench", "chaos"}),
}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def forbidden_imports(folder: str) -> list[str]:
    wrong = []
    for path in sorted((REPO / folder).rglob("*.py")):
        if ".venv" in path.parts or "__pycache__" in path.parts:
            continue
        for line, package in imported_packages(path.read_text()):
            if package in FORBIDDEN[folder]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {package}")
    return wrong


@pytest.mark.parametrize("folder", list(FORBIDDEN))
def test_imports_go_one_way(folder: str) -> None:
    assert (REPO / folder).is_dir()
    assert forbidden_imports(folder) == []


def test_the_check_sees_every_kind_of_import() -> None:
    source = """
import bench.ingest
from tests.conftest import AMQP_URL
def later():
    from chaos import faults
from . import sibling
"""
    assert sorted(imported_packages(source)) == [(2, "bench"), (3, "tests"), (5, "chaos")]
