"""README, "Works with": every snippet runs as written (after the section's first block).

A snippet whose library is not installed is skipped (RLlib and rl-zoo3 have
extras of their own; the clients extra has the others); the slow ones (Ray
starts a cluster, rl-zoo3 a process) are marked slow.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Which library each snippet needs (by its heading), and the snippets too slow for the default run.
NEEDS = {"SB3": "stable_baselines3", "sb3-contrib": "sb3_contrib", "rl-zoo3": "rl_zoo3", "RLlib": "ray",
         "TorchRL": "torchrl", "rliable": "rliable"}
SLOW = {"rl-zoo3", "RLlib"}


def _section() -> tuple[str, dict[str, tuple[str, str]]]:
    """The section's first python block, and each later block by its heading: (language, code)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Works with\n")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    prelude = ""
    blocks: dict[str, tuple[str, str]] = {}
    heading = None
    for match in re.finditer(r"^#### ([^\n]+)$|^```(\w+)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).strip()
        elif heading is None:
            prelude = match.group(3)
        else:
            blocks[heading] = (match.group(2), match.group(3))
    return prelude, blocks


PRELUDE, BLOCKS = _section()


def test_the_section_has_a_snippet_for_every_row() -> None:
    assert "quick = " in PRELUDE
    assert set(BLOCKS) == {"SB3", "sb3-contrib", "rl-zoo3", "RLlib", "TorchRL", "A Gymnasium loop",
                           "Gymnasium wrappers", "rliable"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BLOCKS]
)
def test_snippet_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needed = NEEDS.get(name)
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{needed} is not installed")
    language, code = BLOCKS[name]
    if language == "bash":
        # Written to run from the repository root; its output goes to a temporary folder instead.
        command = shlex.split(code.replace("\\\n", " ").replace("runs/zoo", str(tmp_path / "zoo")))
        assert command[0] == "python"
        proc = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    assert language == "python"
    monkeypatch.chdir(tmp_path)  # anything a library writes (logs, results) lands here
    exec(compile(PRELUDE + "\n" + code, f"README.md: Works with, {name}", "exec"), {"__name__": "readme"})
