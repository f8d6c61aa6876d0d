"""Command-line flags generated from a dataclass, so that a CLI cannot drift from the config it fills.

``add_dataclass_flags(parser, cls)`` adds one flag per field of ``cls``:

* spelling ``--field-name`` (underscores become dashes); a ``bool`` field is a switch: ``--name``
  when it defaults to False, ``--no-name`` (which stores False) when it defaults to True; a
  ``bool | None`` field is the pair ``--name`` / ``--no-name`` (None when neither is given);
* type from the annotation: ``int``, ``float``, ``str``, ``Path`` and optionals of them;
  ``tuple[T, ...]`` -> ``nargs="*"``, ``tuple[T, T]`` -> ``nargs=2``, ``list[T]`` -> ``nargs="+"``,
  ``Literal[...]`` -> ``choices``;
* default from the field (a field without one is a required flag), or None for every flag with
  ``unset_defaults`` (to tell which flags were given, e.g. to override a config read from a file);
* help from the class docstring's ``Attributes:`` section (``field_docs``), with the default
  appended (unless it is None or a switch's); a ``--no-name`` switch's help reads "turn off: ...".

``options={"field": {...}}`` overrides any ``add_argument`` keyword of a field's flag, and ``"name"``
its spelling (e.g. ``{"overrides": {"name": "--set", "action": "append", "metavar": "KEY=VALUE"}}``);
a ``"name"`` without dashes makes the field a positional argument, which must then be spelled like the
field (e.g. ``{"bag": {"name": "bag", "nargs": "?"}}``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_ATTRIBUTE = re.compile(r"^ {4}(\w+(?:\s*,\s*\w+)*)\s*:\s*(.*)$")


def field_docs(cls: type) -> dict[str, str]:
    """The text of each field in a class docstring's Google-style ``Attributes:`` section.

    An entry ``name: text`` (``a, b: text`` for several fields) continues on the more deeply indented
    lines below it; the section ends at the first line that is not indented.
    """
    docs: dict[str, str] = {}
    current: list[str] = []
    inside = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        elif inside and (match := _ATTRIBUTE.match(line)):
            current = [name.strip() for name in match.group(1).split(",")]
            for name in current:
                docs[name] = match.group(2).strip()
        elif inside and line.strip():
            for name in current:
                docs[name] = f"{docs[name]} {line.strip()}"
    return docs


def _shown(value: Any) -> str:
    """A default as it would be typed on the command line."""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "none"
    return str(value) if value != "" else '""'


def _without_none(tp: Any) -> Any:
    """``T`` of ``T | None`` (anything else unchanged)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _value_keywords(tp: Any, where: str) -> dict[str, Any]:
    """``add_argument`` keywords (type, nargs, choices) of a non-bool annotation."""
    tp = _without_none(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"nargs": "*", "type": args[0]}
    if origin is tuple and args and all(a is args[0] for a in args):
        return {"nargs": len(args), "type": args[0]}
    if origin is list and len(args) == 1:
        return {"nargs": "+", "type": args[0]}
    if tp in (int, float, str, Path):
        return {"type": tp}
    raise TypeError(f"{where}: no command-line form for {tp!r}; exclude the field or give its options")


def add_dataclass_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    exclude: Iterable[str] = (),
    unset_defaults: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, ...]:
    """Add one flag per field of dataclass ``cls`` (see the module docstring).

    Returns:
        the fields that got a flag (their values are ``args.<field>``).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    exclude, options = set(exclude), options or {}
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else dataclasses.MISSING
        )
        if hints[f.name] is bool:
            name = f"--no-{f.name}" if default is True else f"--{f.name}"
            keywords: dict[str, Any] = {"action": "store_false" if default is True else "store_true"}
        elif hints[f.name] == bool | None:
            name = f"--{f.name}"
            keywords = {"action": argparse.BooleanOptionalAction}
        else:
            name = f"--{f.name}"
            keywords = _value_keywords(hints[f.name], f"{cls.__name__}.{f.name}")
        if f.name in docs:
            keywords["help"] = docs[f.name]
            if hints[f.name] is bool and default is True:
                keywords["help"] = f"turn off: {docs[f.name]}"
            elif (
                not unset_defaults
                and hints[f.name] is not bool
                and default not in (None, dataclasses.MISSING)
            ):
                keywords["help"] += f" (default: {_shown(default)})"
        if unset_defaults:
            keywords["default"] = None
        elif default is dataclasses.MISSING:
            keywords["required"] = True
        else:
            keywords["default"] = default
        extra = dict(options.get(f.name, {}))
        name = extra.pop("name", name.replace("_", "-"))
        if extra.get("action") == "append":
            keywords.pop("nargs", None)
        keywords.update(extra)
        if "help" in keywords:
            keywords["help"] = keywords["help"].replace("%", "%%")
        if name.startswith("-"):
            parser.add_argument(name, dest=f.name, **keywords)
        elif name == f.name:
            keywords.pop("required", None)  # argparse decides that for positionals (nargs)
            parser.add_argument(name, **keywords)
        else:
            raise ValueError(f"{cls.__name__}.{f.name}: a positional argument is spelled like its field")
        added.append(f.name)
    return tuple(added)


def _field_value(tp: Any, value: Any) -> Any:
    """A parsed flag value as its field holds it: argparse's list as a tuple for a tuple field."""
    if isinstance(value, list) and typing.get_origin(_without_none(tp)) is tuple:
        return tuple(value)
    return value


def given_values(args: argparse.Namespace, cls: type, names: Iterable[str]) -> dict[str, Any]:
    """The fields among ``names`` the command line set (not None), lists of tuple fields as tuples."""
    hints = typing.get_type_hints(cls)
    return {
        name: _field_value(hints[name], getattr(args, name))
        for name in names
        if getattr(args, name) is not None
    }


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of ``cls`` from the flags `add_dataclass_flags` added to the parser (fields without
    a flag keep their defaults; lists of tuple fields become tuples)."""
    hints = typing.get_type_hints(cls)
    return cls(
        **{
            f.name: _field_value(hints[f.name], getattr(args, f.name))
            for f in dataclasses.fields(cls)
            if f.init and hasattr(args, f.name)
        }
    )
