"""An ``argparse`` command line generated from an ``Args`` dataclass (CleanRL style, without tyro).

Every field becomes ``--field-name``; its help text is the one-line docstring
written under the field, so the dataclass is the only place a flag is
documented. Supported types: ``int``, ``float``, ``str``, ``bool``
(``--flag`` / ``--no-flag``), ``list[str|int|float]`` (space-separated
values) and ``X | None`` (the word ``none`` gives None).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["field_docs", "parse_args"]

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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag help with defaults; the description (a module docstring) keeps its own line breaks."""


def _optional(value: str, convert: Any) -> Any:
    return None if value.lower() == "none" else convert(value)


def parse_args(
    cls: type[T], argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None
) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=_Formatter,
    )
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name}: every field needs a one-line docstring under it")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": default, "help": docs[f.name], "dest": f.name}
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
        parser.add_argument(flag, **kwargs)
    return cls(**vars(parser.parse_args(argv)))
