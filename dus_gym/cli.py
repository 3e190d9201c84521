"""An ``argparse`` command line generated from an ``Args`` dataclass (CleanRL style, without tyro).

Every field becomes ``--field-name``; its help text is the one-line docstring
written under the field, so the dataclass is the only place a flag is
documented. Supported types: ``int``, ``float``, ``str``, ``bool``
(``--flag`` / ``--no-flag``), ``list[str|int|float]`` (space-separated
values) and ``X | None`` (the word ``none`` gives None). A field without a
default is a required flag. :func:`flag` adds what a type cannot say (a
positional argument, choices, a checked value, a repeated flag, two values).

Errors are argparse's: a bad flag, a bad JSON value (:func:`json_object`) or a
bad name met while a tool sets itself up (an unknown policy, env id or data
set, a missing run folder: :func:`setting_up`) ends the tool with one line
``PROG: error: MESSAGE`` on stderr and exit status 2 (:func:`run`), not a
traceback. Errors once the work has started keep their traceback.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import itertools
import json
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from gymnasium import error as gym_error

__all__ = [
    "USER_ERRORS",
    "UsageError",
    "fail",
    "field_docs",
    "flag",
    "json_object",
    "parse_args",
    "run",
    "setting_up",
    "usage_errors",
]

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


class UsageError(ValueError):
    """A bad value or name given to a command-line tool: :func:`run` prints it as one line, exit status 2."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError, gym_error.Error
)
"""What a bad flag value raises while a tool sets itself up: a bad name or value (ValueError, KeyError,
an unknown keyword in a JSON object of env arguments: TypeError), a missing file or folder, an unknown env id."""


def _message(err: BaseException) -> str:
    # str(KeyError("x")) is "'x'" (its repr); the message itself reads better.
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err) or type(err).__name__


@contextlib.contextmanager
def setting_up() -> Iterator[None]:
    """Turn the :data:`USER_ERRORS` raised inside into :class:`UsageError` (chained to the original).

    Wrap a tool's setup in it: reading flags, resolving names, building the
    envs and loading the policies, before any episode runs. A caller of the
    tool's ``main`` still gets a ``ValueError`` with the message; :func:`run`
    prints it as one line. Errors raised later, once the work runs, are not
    touched and keep their traceback: there they mean a bug, not a bad flag.
    """
    try:
        yield
    except UsageError:
        raise
    except USER_ERRORS as err:
        raise UsageError(_message(err)) from err


def fail(prog: str, message: str) -> NoReturn:
    """Exit as argparse does for a bad command line: ``prog: error: message`` on one line of stderr, status 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def usage_errors(prog: str) -> Iterator[None]:
    """Inside: a :class:`UsageError` ends the process as argparse does (:func:`fail`); nothing else is caught."""
    try:
        yield
    except UsageError as err:
        fail(prog, str(err))


def run(main: Callable[[], Any], prog: str) -> NoReturn:
    """Run a tool's ``main`` and exit: argparse's exit status 2 and one line ``prog: error: ...`` for a
    :class:`UsageError`, else ``main``'s return value when it is an int (0 otherwise).

    Use it as ``if __name__ == "__main__": cli.run(lambda: main(...), PROG)``.
    """
    with usage_errors(prog):
        result = main()
    raise SystemExit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def json_object(text: str, flag: str) -> dict[str, Any]:
    """Parse the JSON object given to ``flag`` on the command line.

    Raises:
        UsageError: naming the flag, the text and what is expected, when
            ``text`` is not JSON or not a JSON object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{flag}: {text!r} is not valid JSON ({err}); expected an object like '{{\"n_steps\": 15}}'"
        ) from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise UsageError(f"{flag}: {text!r} is a JSON {kind}; expected an object like '{{\"n_steps\": 15}}'")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (the usage of a tool with 20 flags would bury it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag help with defaults; the description (a module docstring) keeps its own line breaks."""


def _optional(value: str, convert: Any) -> Any:
    return None if value.lower() == "none" else convert(value)


_ARGPARSE = "argparse"  # the key of a field's metadata that :func:`flag` fills


def flag(default: Any = dataclasses.MISSING, *, positional: bool = False, **argparse_kwargs: Any) -> Any:
    """A dataclass field whose command-line argument gets ``argparse_kwargs`` on top of what its type gives.

    ``positional``: an argument without ``--`` (the field needs no default).
    ``argparse_kwargs``: keyword arguments of ``add_argument`` (``choices``,
    ``type`` for a checked value, ``metavar``, ``nargs=2``, ``action="append"``:
    the flag is repeated, one value each time). A list default is copied for
    every instance.
    """
    metadata = {_ARGPARSE: {"positional": positional, **argparse_kwargs}}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_args(
    cls: type[T], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None,
    epilog: str | None = None,
) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of the dataclass ``cls``.

    A bad flag or flag value exits with status 2 and one line on stderr (``--help`` exits 0).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    parser = _Parser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip(),
        epilog=epilog,
        formatter_class=_Formatter,
    )
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name}: every field needs a one-line docstring under it")
        hint = hints[f.name]
        extra = dict(f.metadata.get(_ARGPARSE, {}))
        positional = extra.pop("positional", False)
        option = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": docs[f.name], "dest": f.name}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        elif not positional:
            kwargs["required"] = True
        args = typing.get_args(hint)
        origin = typing.get_origin(hint)
        optional = origin in (typing.Union, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            kwargs.update(nargs="+", type=item)
        elif base in (int, float, str):
            kwargs["type"] = (lambda v, b=base: _optional(v, b)) if optional else base
            kwargs["metavar"] = base.__name__.upper()
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {hint!r} for the command line")
        if "choices" in extra and "metavar" not in extra:
            kwargs.pop("metavar", None)  # the help lists the choices instead
        kwargs.update(extra)
        if kwargs.get("action") == "append":  # the flag is repeated, one value each time
            kwargs.pop("nargs", None)
        if positional:
            kwargs.pop("dest")
            kwargs["metavar"] = extra.get("metavar", f.name)
            parser.add_argument(f.name, **kwargs)
        else:
            parser.add_argument(option, **kwargs)
    return cls(**vars(parser.parse_args(argv)))
