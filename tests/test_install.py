"""A plain, non-editable install carries the shipped agents and finds them from any folder.

A copy of the source tree is installed with pip (offline: no index, no build
isolation, so the build uses this environment's setuptools) into a target
folder, and a fresh interpreter with only that folder on PYTHONPATH, started
elsewhere, loads and plays the shipped agents.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FILES = [
    "config.json", "episodes.csv", "heldout/summary.json", "learning_curve.png", "model.zip", "vecnormalize.pkl"
]

CHECK = """
import json, sys
from pathlib import Path

import gymnasium as gym

import dus_gym
from dus_gym.__main__ import DEFAULT_AGENT, agent_spec, parse_args
from dus_gym.agent_io import PRETRAINED_DIR, load_policy, pretrained_agents

site = Path(sys.argv[1]).resolve()
assert Path(dus_gym.__file__).resolve().is_relative_to(site), f"imported {dus_gym.__file__}, not the install"
files = {
    name: sorted(str(p.relative_to(PRETRAINED_DIR / name)) for p in (PRETRAINED_DIR / name).rglob("*") if p.is_file())
    for name in pretrained_agents()
}
for spec, env_id, kwargs in (("pretrained:dus_v0_ppo", "DUS-v0", {}),
                             ("shortcut_ppo", "DUS-Synthetic-v0", {"n_steps": 15})):
    env = gym.make(env_id, **kwargs)
    action, _ = load_policy(spec, env).predict(env.observation_space.sample())
    assert env.action_space.contains(action)
# The main job finds its agent (it said "No trained agent in .../site-packages/agents/pretrained/dus_v0_ppo").
assert agent_spec(parse_args(["--device", "cpu"])) == DEFAULT_AGENT
print(json.dumps({"pretrained_dir": str(PRETRAINED_DIR), "files": files}))
"""


@pytest.mark.slow
def test_a_non_editable_install_ships_and_loads_the_agents(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    # A copy of the working tree (untracked files included): building in place would write build/ and
    # egg-info into the checkout others work in.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "dus_gym", src / "dus_gym", ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    site = tmp_path / "site"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(src)],
        check=True, env=env, cwd=tmp_path, timeout=600,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(site)], env={**env, "PYTHONPATH": str(site)}, cwd=elsewhere,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["pretrained_dir"]).is_relative_to(site)
    # Exactly what a user needs to load and read each agent: no logs, checkpoints or raw evaluations.
    shipped = sorted(p.name for p in (REPO / "dus_gym" / "pretrained").iterdir() if p.is_dir())
    assert shipped == ["dus_v0_ppo", "general_ppo", "shortcut_ppo"]
    assert report["files"] == dict.fromkeys(shipped, SHIPPED_FILES)
