"""Sampler agents for the DUS envs: ``train.py`` (SB3), ``evaluate.py``, ``reinforce.py`` (plain Gymnasium).

Run them from the repository root as modules (``python -m agents.evaluate --help``);
``train.py`` and ``reinforce.py`` also run as files (``python agents/train.py``),
``evaluate.py`` does not: it imports ``benchmarks.stats``, which a file run
cannot see. The package also lets tests and worker processes import them as
``agents.train``. The shipped agents are package data of dus_gym
(``dus_gym/pretrained/``, ``pretrained:NAME`` as a policy).
"""
