"""The code's shape (issue 22): no import circle between the modules of dus_gym/, agents/ and benchmarks/,
no file over ~500 lines, no function over ~80 lines without a reason, and the defaults' one owner.

The import graph is read from the source (every ``import`` statement, also inside functions and under
``TYPE_CHECKING``: a circle through a lazy import is still a circle of design). A function's length is
its lines from ``def`` to its end, less its docstring; a longer one needs a comment ``# long: REASON`` on
the line above it (or above its decorators).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dus_gym", "agents", "benchmarks")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80

# Files other engineers are shrinking under issue 22 (items 1 and 4: the run and the batch written once,
# the env's contract with the vector env). The lead empties this list once those branches are merged.
LONG_FILES_BEING_SPLIT = {"dus_gym/batched.py", "dus_gym/run.py", "dus_gym/envs/dus_env.py"}

# Known circles, each with what removes it; the lead empties this list when they are gone.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports (``from pkg import name``: ``pkg.name`` when
    that is a module, else ``pkg``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # import a.b.c: the deepest of ours
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    graph = import_graph()
    assert "benchmarks.compare" in graph and "dus_gym.data.convert.pipeline" in graph  # the graph is read
    unknown = [sorted(c) for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not unknown, f"import circles: {unknown}"


def _python_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]


def test_no_file_over_500_lines() -> None:
    long = {}
    for path in _python_files():
        name = path.relative_to(REPO).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_FILE_LINES and name not in LONG_FILES_BEING_SPLIT:
            long[name] = lines
    assert not long, f"files over {MAX_FILE_LINES} lines: {long}"


def function_lengths(path: Path) -> dict[str, int]:
    """Each function of a file (``Class.method`` for methods, by first line) and its length without its
    docstring, unless a ``# long:`` comment above it gives the reason it is longer."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    lengths = {}
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if first >= 2 and lines[first - 2].strip().startswith("# long:"):
            continue
        length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
        doc = node.body[0]
        if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
            length -= doc.end_lineno - doc.lineno + 1  # type: ignore[operator]
        lengths[f"{node.name}:{node.lineno}"] = length
    return lengths


def test_function_lengths_are_measured_without_the_docstring(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    source = f'def f():\n    """Doc,\n    two lines."""\n{body}\n\n\n# long: a table\ndef g():\n{body}\n'
    (tmp_path / "m.py").write_text(source)
    assert function_lengths(tmp_path / "m.py") == {"f:1": 4}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_80_lines_without_a_reason(package: str) -> None:
    long = {}
    for path in _python_files():
        name = path.relative_to(REPO).as_posix()
        if not name.startswith(package + "/") or name in LONG_FILES_BEING_SPLIT:
            continue
        long.update({f"{name}:{f}": n for f, n in function_lengths(path).items() if n > MAX_FUNCTION_LINES})
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (or give a '# long: REASON' comment): {long}"


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_rl_zoo_files_are_written_from_the_one_owner_of_the_defaults(algo: str) -> None:
    from agents.defaults import DEFAULT_HYPERPARAMS, zoo_config, zoo_config_path

    assert zoo_config_path(algo).read_text() == zoo_config(algo), "run: python -m agents.defaults"
    for key, value in DEFAULT_HYPERPARAMS[algo].items():
        if not isinstance(value, dict):
            assert f"  {key}: {value!r}\n" in zoo_config(algo)
