"""Every command-line tool reports a bad flag, name or value as one line ``PROG: error: ...`` with exit status 2.

The tools run in this process through their own ``if __name__ == "__main__"``
block (``runpy``), so each case costs no interpreter start; one case per tool
also runs as a real subprocess, the way a user starts it.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dus_gym import cli

REPO = Path(__file__).resolve().parents[1]
MISSING_RUN = "runs/no_such_run_folder"


def run_tool(module: str, argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``python -m module *argv`` in this process; assert exit status 2 and one error line; return it."""
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with pytest.raises(SystemExit) as exit_info, warnings.catch_warnings():
        # runpy warns that the module is imported already (by an earlier case); harmless here.
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


# (argv, words the message must contain)
MAIN_JOB = [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--seeds", "two"], "--seeds: invalid int value: 'two'"),
    (["--policies", "nope"], "unknown policy 'nope'"),
    (["--env-ids", "DUS-v9"], "DUS"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--agent", MISSING_RUN, "--env-ids", "DUS-v0"], f"{MISSING_RUN}: no such run folder"),
    (["--agent", "pretrained:nope", "--env-ids", "DUS-v0"], "no shipped agent 'nope'"),
    (["--agent", "nope", "--env-ids", "DUS-v0"], "--agent 'nope': expected a run folder, pretrained:NAME"),
]


@pytest.mark.parametrize(("argv", "words"), MAIN_JOB)
def test_main_job_errors(argv: list[str], words: str, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_tool("dus_gym", [*argv, "--device", "cpu"], capsys, monkeypatch)
    assert line.startswith("python -m dus_gym: error: ") and words in line, line


def test_main_job_main_exits_2_too(capsys: pytest.CaptureFixture[str]) -> None:
    # The console script dus-gym calls main() itself: it must not print a traceback either.
    from dus_gym.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--policies", "nope", "--device", "cpu"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("python -m dus_gym: error: unknown policy 'nope'")


def _train_cases(tmp: str) -> list[tuple[list[str], str]]:
    return [
        (["--nope"], "unrecognized arguments: --nope"),
        (["--algo", "dqn"], "--algo 'dqn': expected one of ['ppo', 'a2c'] (agents/ppo_batched.py"),
        (["--algo", "cem_residual"], "--algo 'cem_residual': expected one of ['ppo', 'a2c']"),
        (["--env-id", "DUS-v9"], "DUS"),
        (["--env-kwargs", "{bad"], "--env-kwargs: '{bad' is not valid JSON"),
        (["--hyperparams", "[1]"], "--hyperparams: '[1]' is a JSON array; expected an object"),
        (["--env-kwargs", '{"dataset": "nope"}'], "unknown dataset 'nope'"),
        (["--env-kwargs", '{"nope": 1}'], "unexpected keyword argument 'nope'"),
        (["--instances", "nope"], "nope"),
        (["--init-from", MISSING_RUN], f"{MISSING_RUN}: no such run folder"),
        (["--output-dir", tmp, "--init-from", "pretrained:shortcut_ppo", "--algo", "a2c"], "its algo is 'ppo'"),
    ]


@pytest.mark.parametrize("case", range(len(_train_cases(""))))
def test_train_errors(case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("stable_baselines3")
    argv, words = _train_cases(str(tmp_path))[case]
    line = run_tool("agents.train", ["--output-dir", str(tmp_path), *argv], capsys, monkeypatch)
    assert line.startswith("agents/train.py: error: ") and words in line, line
    assert not list(tmp_path.iterdir()), "a failed setup wrote a run folder"


EVALUATE = [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--policies", "nope"], "unknown policy 'nope'"),
    (["--policies", MISSING_RUN], f"{MISSING_RUN}: no such run folder"),
    (["--policies", "pretrained:nope"], "no shipped agent 'nope'"),
    (["--env-id", "DUS-v9"], "DUS"),
    (["--env-kwargs", "[1]"], "--env-kwargs: '[1]' is a JSON array"),
    (["--env-kwargs", '{"dataset": "nope"}'], "unknown dataset 'nope'"),
    (["--instances", "train"], "evaluation needs a held-out set"),
    (["--n-episodes", "0"], "--n-episodes 0: expected 1 .. 32"),
    (["--policies", "pretrained:shortcut_ppo", "--env-kwargs", '{"levels": 5}'],
     "was trained for the action_space MultiDiscrete([9 9]), this env has MultiDiscrete([5 5])"),
]


@pytest.mark.parametrize(("argv", "words"), EVALUATE)
def test_evaluate_errors(argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("stable_baselines3")
    line = run_tool("agents.evaluate", ["--output", str(tmp_path / "e.jsonl"), *argv], capsys, monkeypatch)
    assert line.startswith("python -m agents.evaluate: error: ") and words in line, line


def test_evaluate_summarize_only_without_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "none.jsonl"
    line = run_tool("agents.evaluate", ["--summarize-only", "--output", str(out)], capsys, monkeypatch)
    assert f"--summarize-only: no episodes file {out}" in line


REINFORCE = [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--env-id", "DUS-v9"], "DUS"),
    (["--env-kwargs", "{bad"], "--env-kwargs: '{bad' is not valid JSON"),
    (["--env-kwargs", '{"dataset": "nope"}'], "unknown dataset 'nope'"),
    (["--env-kwargs", '{"action_type": "continuous"}'], "needs a discrete action space"),
    (["--eval-instances", "nope"], "nope"),
]


@pytest.mark.parametrize(("argv", "words"), REINFORCE)
def test_reinforce_errors(argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_tool("agents.reinforce", ["--output-dir", str(tmp_path), *argv], capsys, monkeypatch)
    assert line.startswith("agents/reinforce.py: error: ") and words in line, line
    assert not list(tmp_path.iterdir()), "a failed setup wrote a run folder"


COMPARE = [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--policies", "nope"], "unknown policy 'nope'"),
    (["--policies", MISSING_RUN], f"{MISSING_RUN}: no such run folder"),
    (["--datasets", "nope"], "unknown dataset 'nope'"),
    (["--methods", "nope"], "unknown method 'nope'"),
    (["--env-kwargs", "[1]"], "--env-kwargs: '[1]' is a JSON array"),
    (["--dataset-kwargs", "{bad"], "--dataset-kwargs: '{bad' is not valid JSON"),
    (["--backend", "dask"], "--backend 'dask': expected one of ['local', 'ray']"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--no-run"], "no results for this grid yet"),
]


@pytest.mark.parametrize(("argv", "words"), COMPARE)
def test_compare_errors(argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    line = run_tool("benchmarks.compare", ["--output", str(tmp_path), *argv], capsys, monkeypatch)
    assert line.startswith("python -m benchmarks.compare: error: ") and words in line, line
    assert not (tmp_path / "results.jsonl").exists()


def _subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # As a user runs them from the repository root, with its checkout installed: no PYTHONPATH (with the
    # root on it, a file run of compare.py could import benchmarks/ and would run the whole default grid).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _assert_one_error_line(proc: subprocess.CompletedProcess[str], prefix: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in proc.stderr, proc.stderr


def test_main_job_error_in_a_real_process() -> None:
    _assert_one_error_line(_subprocess(["-m", "dus_gym", "--policies", "nope"]), "python -m dus_gym: error: ")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["agents/train.py", "--env-id", "DUS-v9"], "agents/train.py: error: "),
        (["agents/reinforce.py", "--env-kwargs", "[1]"], "agents/reinforce.py: error: "),
        (["-m", "agents.evaluate", "--policies", "nope"], "python -m agents.evaluate: error: "),
        (["-m", "benchmarks.compare", "--datasets", "nope"], "python -m benchmarks.compare: error: "),
        # Run as files, these two cannot import benchmarks/: they say how to run them instead. (The bad
        # policy keeps a guard that did not fire from running a whole default grid.)
        (["agents/evaluate.py", "--policies", "nope"],
         "agents/evaluate.py: error: run it from the repository root as a module"),
        (["benchmarks/compare.py", "--policies", "nope"],
         "benchmarks/compare.py: error: run it from the repository root as a module"),
    ],
)
def test_tool_errors_in_real_processes(argv: list[str], prefix: str) -> None:
    _assert_one_error_line(_subprocess(argv), prefix)


# -- the helpers themselves -------------------------------------------------------


def test_json_object_names_the_flag_the_text_and_what_is_expected() -> None:
    assert cli.json_object('{"n_steps": 7}', "--env-kwargs") == {"n_steps": 7}
    with pytest.raises(cli.UsageError, match=r"^--x: '\{bad' is not valid JSON \(.*\); expected an object like"):
        cli.json_object("{bad", "--x")
    for text, kind in (("[1]", "array"), ('"s"', "string"), ("3", "number"), ("null", "null"), ("true", "boolean")):
        with pytest.raises(ValueError, match=rf"^--x: '{re.escape(text)}' is a JSON {kind}; expected an object like"):
            cli.json_object(text, "--x")


def test_setting_up_turns_user_errors_into_usage_errors() -> None:
    with pytest.raises(cli.UsageError, match=r"^missing$") as info, cli.setting_up():
        raise KeyError("missing")  # its str() would be "'missing'"
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(cli.UsageError, match="no file"), cli.setting_up():
        raise FileNotFoundError("no file")
    with pytest.raises(ZeroDivisionError), cli.setting_up():  # a bug is not a bad flag
        raise ZeroDivisionError


def test_run_exits_2_with_one_line_or_with_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    def bad() -> None:
        raise cli.UsageError("--x 3: expected\n  1 .. 2")

    with pytest.raises(SystemExit) as info:
        cli.run(bad, "tool")
    assert info.value.code == 2 and capsys.readouterr().err == "tool: error: --x 3: expected 1 .. 2\n"
    for result, code in ((0, 0), (3, 3), (None, 0), ([1], 0)):
        with pytest.raises(SystemExit) as info:
            cli.run(lambda r=result: r, "tool")  # type: ignore[misc]
        assert info.value.code == code
    with pytest.raises(RuntimeError):  # errors of the work itself keep their traceback
        cli.run(lambda: (_ for _ in ()).throw(RuntimeError("bug")), "tool")


def test_flag_adds_what_a_type_cannot_say(capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import dataclass

    @dataclass
    class Args:
        out: str = cli.flag(positional=True)
        """where to write"""
        item: list[str] = cli.flag(action="append", metavar="NAME=PATH")
        """repeated, one value each time"""
        extra: list[str] = cli.flag([], action="append")
        """repeated, optional"""
        size: list[int] = cli.flag([112, 112], nargs=2, metavar=("H", "W"))
        """two values"""
        kind: str | None = cli.flag(None, type=str, choices=["a", "b"])
        """one of a few"""

    args = cli.parse_args(Args, ["o", "--item", "x=1", "--item", "y=2", "--size", "3", "4"])
    assert args == Args("o", ["x=1", "y=2"], [], [3, 4], None)
    again = cli.parse_args(Args, ["p", "--item", "z=3", "--extra", "e"])
    assert again.extra == ["e"] and again.size == [112, 112] and args.extra == []  # defaults are not shared
    for argv, words in (
        (["o"], "the following arguments are required: --item"),
        (["o", "--item", "x", "--kind", "c"], "argument --kind: invalid choice: 'c'"),
        (["o", "--item", "x", "--size", "3"], "argument --size: expected 2 arguments"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.parse_args(Args, argv, prog="tool")
        assert info.value.code == 2 and words in capsys.readouterr().err
