"""Option dataclasses <-> command-line flags, so the CLI mirrors the library one to one.

A stage declares its options as a dataclass whose fields use `opt(...)`; `cli.py` turns the
fields into flags (`train_json` -> `--train-json`) and builds the dataclass back from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (),
        choices: typing.Sequence | None = None, metavar: str | None = None,
        positional: bool = False, cli: bool = True, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its command-line help. `flags` adds aliases (e.g. ("-o",))."""
    meta = {"help": help, "flags": flags, "choices": choices, "metavar": metavar,
            "positional": positional, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line flag of an option field: `train_json` -> `--train-json`."""
    return "--" + name.replace("_", "-")


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one flag per field of the dataclass `cls` to `parser`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        tp = _base_type(hints[f.name])
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = meta.get("help", "")
        if meta.get("positional"):
            parser.add_argument(f.name, type=tp if tp in (int, float) else str, help=help_text,
                                metavar=meta.get("metavar"))
            continue
        names = [flag(f.name), *meta.get("flags", ())]
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
            kwargs["default"] = bool(default)
        else:
            kwargs["type"] = tp if tp in (int, float) else str
            kwargs["default"] = default
            kwargs["required"] = required
            if meta.get("choices") is not None:
                kwargs["choices"] = list(meta["choices"])
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            if default is not None and help_text:
                kwargs["help"] = f"{help_text} (default: {default})"
        parser.add_argument(*names, **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace):
    """Build `cls` from the parsed flags that `add_dataclass_arguments` added."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if f.metadata.get("cli", True) and hasattr(args, f.name)}
    return cls(**values)
