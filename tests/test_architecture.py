"""The code's shape (issue 22): no import circle between the modules of dus_gym/, agents/ and benchmarks/,
no file over ~500 lines, no function over ~80 lines without a reason, the defaults' one owner, and the
layers of docs/architecture.md (what each may import, where each formula lives).

The import graph is read from the source (every ``import`` statement, also inside functions and under
``TYPE_CHECKING``: a circle through a lazy import is still a circle of design). A function's length is
its lines from ``def`` to its end, less its docstring; a longer one needs a comment ``# long: REASON`` on
the line above it (or above its decorators).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import dus_gym

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dus_gym", "agents", "benchmarks")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80

# Files being shrunk under issue 22 (none left: batched.py, run.py and envs/dus_env.py were, items 1 and 4).
LONG_FILES_BEING_SPLIT: set[str] = set()

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


# docs/architecture.md's layers: no module imports from a layer above its own.
PACKAGE = Path(dus_gym.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def layers() -> dict[str, int]:
    """Module prefix -> layer number, from the table of docs/architecture.md."""
    out = {}
    for line in DOC.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if row:
            for name in re.findall(r"`([\w.]+)`", row.group(2)):
                out[name] = int(row.group(1))
    assert out, f"{DOC}: no layer table found"
    return out


def layer_of(module: str, table: dict[str, int]) -> int:
    """The layer of the longest listed prefix of ``module``."""
    matches = [p for p in table if module == p or module.startswith(p + ".")]
    assert matches, f"{module} belongs to no layer of docs/architecture.md"
    return table[max(matches, key=len)]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every dus_gym import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]  # judged as the module each name is or is in
            found += [(node.lineno, n) for n in names if n.split(".")[0] == "dus_gym"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dus_gym"]
    return found


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    table = layers()
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    upward = []
    for name, path in sorted(modules.items()):
        own = layer_of(name, table)
        for line, imported in runtime_imports(path):
            # `from dus_gym.data import X` names a module or an object: judge the module it names.
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in modules and layer_of(target, table) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} (layer {own}) imports {target} "
                              f"(layer {layer_of(target, table)})")
    assert not upward, "imports against docs/architecture.md's layers:\n" + "\n".join(upward)


def test_the_single_run_is_not_a_batch_of_one() -> None:
    imported = {m for _, m in runtime_imports(PACKAGE / "run.py")}
    assert not any(m.startswith("dus_gym.batched") for m in imported)


def test_the_vector_env_uses_only_the_public_episode_interface() -> None:
    tree = ast.parse((PACKAGE / "envs" / "vector.py").read_text())
    private = sorted(
        {
            (node.lineno, node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        }
    )
    assert not private, f"envs/vector.py reaches into private members of other objects: {private}"


def test_the_table_lists_every_module_and_the_checker_sees_an_upward_import(tmp_path) -> None:
    table = layers()
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path), table)  # every module has a layer
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dus_gym.envs import DUSEnv\n"
                   "from dus_gym.run import RunConfig\n")
    assert runtime_imports(bad) == [(4, "dus_gym.run.RunConfig")]


def test_every_function_the_formula_table_names_exists() -> None:
    """The "Where each formula lives" table names real functions (a rename must update the doc)."""
    import importlib

    text = DOC.read_text().split("## Where each formula lives", 1)[1]
    names = []
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and not set(cells[2].strip()) <= {"-"}:
            names += re.findall(r"`((?:\w+\.)*\w+)`", cells[2])
    assert len(names) >= 15
    for name in names:
        parts = name.split(".")
        for k in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module("dus_gym." + ".".join(parts[:k]))
            except ModuleNotFoundError:
                continue
            for attr in parts[k:]:
                assert hasattr(obj, attr), f"docs/architecture.md names {name}: {obj} has no {attr}"
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"docs/architecture.md names {name}, which is no dus_gym module or function")
