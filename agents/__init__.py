"""Sampler agents for the DUS envs: ``train.py`` (SB3), ``evaluate.py``, ``reinforce.py`` (plain Gymnasium).

The scripts run as files (``python agents/train.py --help``); the package
exists so that tests and worker processes can import them as ``agents.train``.
"""
