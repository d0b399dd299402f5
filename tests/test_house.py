"""The house rules, checked on the source (nothing of it is imported).

Modules of at most 400 lines and functions of at most 50, the design cited from
docs/architecture.md only, no import cycle in ``manager`` or ``dashboard`` (imports
under ``TYPE_CHECKING`` and inside functions count), and the layering of
docs/architecture.md#layout-and-layering: ``bus`` and ``config`` import none of
the daemons, ``agent`` and ``manager`` never import each other, ``dashboard``
imports no ``manager``. And every sleep in the tests says why it is no race.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bus", "manager", "agent", "dashboard", "config")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
#: Folders that are not the project's own text.
SKIPPED_DIRS = {".venv", ".git", "docs", "node_modules", "__pycache__", "test-output", "var",
                "build", "dist"}
#: The name of the design file this project does not have; spelt in two halves so
#: that this file does not contain it.
RETIRED_NAME = "DES" + "IGN"
#: What each package may not import (by top-level package).
FORBIDDEN = {
    "bus": {"manager", "agent", "dashboard", "config"},
    "config": {"manager", "agent", "dashboard"},
    "agent": {"manager", "dashboard"},
    "manager": {"agent", "dashboard"},
    "dashboard": {"manager", "agent"},
}


def package_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def own_text_files(*suffixes: str) -> Iterator[Path]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith(suffixes):
                yield Path(folder) / name


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# --- sizes --------------------------------------------------------------------------


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in package_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them): {long}"


def long_functions(source: str) -> list[tuple[str, int]]:
    """``(name, lines)`` of each function or method longer than the limit, from its
    ``def`` line to its last line (decorators not counted)."""
    return [(node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_over_50_lines() -> None:
    long = {f"{p.relative_to(ROOT)}:{name}": n for p in package_files()
            for name, n in long_functions(p.read_text(encoding="utf-8"))}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"


def test_the_function_check_counts_a_long_function() -> None:
    body = "".join(f"    x = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions(f"def f():\n{body[:-10]}") == []


# --- the design document --------------------------------------------------------------


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text."""
    out = set()
    for line in markdown.splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_the_design_is_cited_from_docs_architecture_md_only() -> None:
    cited = [f"{p.relative_to(ROOT)}:{i}" for p in own_text_files(".py", ".md")
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if RETIRED_NAME in line]
    assert not cited, ("cite docs/architecture.md#<section> instead of the old design "
                       f"file: {cited}")


def test_every_cited_section_of_docs_architecture_md_exists() -> None:
    doc = ROOT / "docs" / "architecture.md"
    sections = anchors(doc.read_text(encoding="utf-8"))
    assert {"processes-and-sockets", "the-wire", "nodes-jobs-and-runs", "metric-path",
            "security", "what-scales-how"} <= sections
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    cite = re.compile(r"docs/architecture\.md#([\w-]+)((?:, #[\w-]+)*)")
    broken = []
    for path in own_text_files(".py", ".md"):
        for m in cite.finditer(path.read_text(encoding="utf-8")):
            names = [m[1], *re.findall(r"#([\w-]+)", m[2])]
            broken += [f"{path.relative_to(ROOT)}: #{n}" for n in names if n not in sections]
    assert not broken, f"no such section in docs/architecture.md: {broken}"


# --- imports --------------------------------------------------------------------------


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the project's modules it imports: at the top, under ``TYPE_CHECKING``
    and inside functions alike."""
    files = {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    return {name: _imports(name, path, files.keys()) for name, path in files.items()}


def _imports(name: str, path: Path, known: set[str] | object) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".")[:None if path.name == "__init__.py" else -1]
                here = here[:len(here) - node.level + 1]
                base = ".".join(here + ([node.module] if node.module else []))
            for alias in node.names:  # a submodule if there is one, else the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    out = set()
    for module in found:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module and module != name:
            out.add(module)
    return out


def cycles(graph: dict[str, set[str]], package: str) -> list[list[str]]:
    """The import cycles among ``package``'s modules (strongly connected components)."""
    inside = {n for n in graph if n == package or n.startswith(package + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v] & inside):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(inside):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_check_sees_a_type_checking_cycle(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import B\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (tmp_path / "pkg" / "c.py").write_text("def f():\n    from . import a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph, "pkg") == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_manager() -> None:
    assert cycles(import_graph(), "manager") == []


def test_no_import_cycle_in_dashboard() -> None:
    assert cycles(import_graph(), "dashboard") == []


def test_no_import_cycle_in_bus_agent_or_config() -> None:
    graph = import_graph()
    assert {p: found for p in ("bus", "agent", "config") if (found := cycles(graph, p))} == {}


def test_the_layers_import_only_downwards() -> None:
    wrong = sorted(f"{module} imports {dep}"
                   for module, deps in import_graph().items()
                   for dep in deps
                   if dep.split(".")[0] in FORBIDDEN[module.split(".")[0]])
    assert not wrong, f"imports against docs/architecture.md#layout-and-layering: {wrong}"


# --- tests wait on events ------------------------------------------------------------

#: A sleep call in a test: ``time.sleep(x)``, ``asyncio.sleep(x)``, ``sleep(x)``.
SLEEP = re.compile(r"\b(?:time\.|asyncio\.)?sleep\((?P<arg>[^)]*)\)")


def unexplained_sleeps(text: str) -> list[str]:
    """Lines of ``text`` that sleep without saying why it is no race.

    Tests wait on events, never on time. A sleep is fine as a poll step under a
    deadline, as the load a test creates, or as ``sleep(0)`` (one turn of the
    loop); such a line carries ``wait-ok: <why>``. Sleeps written inside the
    strings of a child program count too: they are that program's behaviour, and
    say so the same way.
    """
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = SLEEP.search(line)
        if match and match["arg"].strip() != "0" and "wait-ok" not in line:
            found.append(f"{number}: {line.strip()}")
    return found


def test_every_sleep_in_the_tests_says_why_it_is_no_race() -> None:
    offenders = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "tests").rglob("*.py"))
                 if p.name != "test_house.py" and (lines := unexplained_sleeps(p.read_text()))}
    assert not offenders, offenders


def test_the_sleep_check_sees_a_bare_sleep() -> None:
    assert unexplained_sleeps("    time.sleep(1)\n    await asyncio.sleep(0)\n") == \
        ["1: time.sleep(1)"]
    assert unexplained_sleeps("time.sleep(0.1)  # wait-ok: poll step under a deadline") == []
