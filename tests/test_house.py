"""The house rules a newcomer relies on: the code cites its own design document (docs/design.md, by section
name) and nothing outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("src", "tests", "benchmarks", "docs") for p in sorted((REPO / d).rglob("*"))
           if p.suffix in (".py", ".md", ".toml", ".html")] + [REPO / "README.md"]
#: files other engineers are rewriting: their references to the old design notes go with that rework
NOT_YET: tuple[str, ...] = ()
CITATION = re.compile(r'docs/design\.md, "([^"]+)"')


def _headings() -> set[str]:
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", text, re.M)}


def test_design_citations_name_a_section():
    headings = _headings()
    bad = []
    for path in SOURCES:
        for m in CITATION.finditer(path.read_text(encoding="utf-8")):
            if m.group(1) not in headings:
                bad.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not bad, "citations of docs/design.md sections that do not exist:\n" + "\n".join(bad)


def test_no_reference_to_a_document_outside_the_repository():
    bad = []
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(NOT_YET) or path.name == "test_house.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bDESIGN\b", line):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "cite docs/design.md by section instead:\n" + "\n".join(bad)


# -- imports run down the data flow (docs/design.md, "Data flow") ----------------------------------------

SRC = REPO / "src" / "taskspace"
#: each stage may import the stages before it, never one after it
STAGES = (
    ("errors", "io", "provenance", "progress", "faults"),
    ("spaces", "suites"),
    ("models",),
    ("scoring",),
    ("probes",),
    ("analysis",),
    ("report",),
    ("runs",),
    ("demo",),
    ("cli", "__main__"),
)
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every taskspace module ``path`` imports, at the top or inside a function."""
    import ast

    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mod, names = "", [a.name for a in node.names]
        else:
            continue
        for m in [mod, *names]:
            if m.startswith("taskspace."):
                out.add(m)
    return out


def _graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {_module(p) for p in paths}
    graph = {}
    for p in paths:
        targets = set()
        for m in _imported(p):
            while m and m not in modules:
                m = m.rpartition(".")[0]
            if m and m != _module(p) and not (p.name == "__init__.py" and m.startswith(_module(p) + ".")):
                targets.add(m)
        graph[_module(p)] = targets
    return graph


def test_no_module_imports_a_later_stage():
    bad = []
    for mod, targets in _graph().items():
        stage = mod.split(".")[1] if "." in mod else None
        if stage not in RANK:
            continue
        for t in sorted(targets):
            other = t.split(".")[1]
            if other in RANK and RANK[other] > RANK[stage]:
                bad.append(f"{mod} imports {t}")
    assert not bad, "imports that run against the data flow:\n" + "\n".join(bad)


def test_no_import_circles():
    """No two modules import each other, directly or through others (a package's face, which only hands
    its modules' names on, is left out)."""
    graph = {m: {t for t in ts if not _is_face(t)} for m, ts in _graph().items() if not _is_face(m)}
    circles, state = [], {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def _is_face(module: str) -> bool:
    path = SRC.parent / module.replace(".", "/") / "__init__.py"
    return path.exists()


# -- short functions (docs/design.md) -------------------------------------------------------------------

#: the longest a function in src/ may be, in lines (its signature and docstring included)
MAX_FUNCTION_LINES = 80
#: declarative tables, long by nature: ``path relative to src/taskspace:function``
LONG_TABLES = ("suites/toy/grammar.py:rules",)


def test_no_function_is_longer_than_80_lines():
    import ast

    long = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONG_TABLES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"split into named steps (at most {MAX_FUNCTION_LINES} lines each):\n" + "\n".join(long)


# -- what start-up loads (docs/design.md, "Data flow") ---------------------------------------------------

HEAVY = ("torch", "transformers", "pandas", "scipy", "sklearn", "matplotlib", "ray")


@pytest.mark.parametrize("modules", ["taskspace", "taskspace.cli", "taskspace.runs.plan, taskspace.runs.dryrun, "
                                     "taskspace.runs.jobs, taskspace.runs.runner"])
def test_start_up_imports_no_heavy_library(modules):
    """``import taskspace``, the command line and a run's planning (plan, dry run, job keys) load none of the
    heavy or optional libraries: the function-local imports that keep them out must stay where they are."""
    import subprocess
    import sys

    code = (f"import sys, {modules}; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {modules} loads {out}"
