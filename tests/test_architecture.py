"""docs/architecture.md stays true: no module imports from a layer above its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dus_gym

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
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
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
    assert runtime_imports(bad) == [(4, "dus_gym.run"), (4, "dus_gym.run.RunConfig")]


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
