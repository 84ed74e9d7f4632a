"""One declaration per config key, and everything derived from it.

A key is declared once, as a dataclass field made with `key()`: the annotation is its type (`Literal[...]` for a
choice, `X | None` where null is allowed), `key()` gives its default, its help text and its bounds. From that one
place come

- the check of a value (`check_fields`, `refusal`), and what a refusal says it expected ("a whole number ≥ 1"),
- the Hydra schema the config is composed into (`schema`: the structure and the defaults),
- the key's documentation (`describe`: `--help` and docs/config.md).

Plain Python: importing this module imports neither torch nor lightning nor omegaconf.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, field
from typing import Any, Literal, Union

from gptlab.errors import GptlabError

COUNT_MAX = 2**31 - 1  # sizes and counts past this mean nothing here (and overflow int32 indexing)


def key(default=MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None, special: dict | None = None,
        empty: bool = False, blank: bool = False, increasing: bool = False, arch: bool = True, open: bool = False,
        **facts):
    """A declared config key. default: its value when the config does not set it (none: the config must);
    ge/gt/le/lt: bounds of every number in the value; special: {value: meaning} allowed outside the bounds
    (-1: no limit); empty: "" or [] allowed; blank: a string of white space allowed; increasing: a list whose items
    strictly increase; arch (model keys): the key shapes the network, so a checkpoint must agree on it; open: a
    group of keys that gptlab only partly declares (the Trainer's: Lightning takes the rest); facts: other facts
    about the key that code reads from here (gpt2: GPT-2's value of a model key)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "special": special or {}, "empty": empty,
            "blank": blank, "increasing": increasing, "arch": arch, "open": open, **facts}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def group(declaration, help: str = ""):
    """A declared group of keys (`data: DataConfig = group(DataConfig, ...)`): its own declaration's keys, nested."""
    return field(default_factory=declaration, metadata={"help": help})


class Refused(GptlabError):
    """A value its declaration refuses: `key=value: expected ...`."""

    def __init__(self, key: str, value, expected: str, note: str = ""):
        self.key, self.value, self.expected, self.note = key, value, expected, note
        super().__init__(f"{key}={show(value)}: expected {expected}{note}")

    def under(self, key: str, note: str = "") -> Refused:
        """The same refusal reported under another key (the one the user set, when this key copies it)."""
        return Refused(key, self.value, self.expected, note)


def show(value) -> str:
    """A value as the user writes it on the command line."""
    if isinstance(value, str) and (value == "" or value != value.strip() or " " in value):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# --- kinds of value a Python type cannot say


class Kind:
    """A kind of value with its own test: used in annotations like a type (`int | Fraction`). `refuses`: values
    of the right Python type that it refuses (what the tests walk a key of this kind with)."""

    expect = "?"
    refuses: tuple = ()

    @classmethod
    def accepts(cls, value) -> bool:
        raise NotImplementedError


class Fraction(Kind):
    expect = "a fraction in (0, 1] written with a point (0.5, 1.0)"
    refuses = (1.5, 0.0)

    @classmethod
    def accepts(cls, value) -> bool:
        return isinstance(value, float) and 0 < value <= 1


class Duration(Kind):
    expect = "a duration DD:HH:MM:SS (00:00:10:00 is ten minutes) or a dict such as {minutes: 10}"
    UNITS = ("days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "weeks")
    refuses = ("10min", {"minutes": -1}, {"lightyears": 1})

    @classmethod
    def accepts(cls, value) -> bool:
        if isinstance(value, str):
            return bool(re.fullmatch(r"\d{1,2}:\d{1,2}:\d{1,2}:\d{1,2}", value))  # Lightning's DD:HH:MM:SS
        if isinstance(value, Mapping):
            return bool(value) and set(value) <= set(cls.UNITS) and all(_is_number(x) and x >= 0
                                                                        for x in value.values())
        return False

    @classmethod
    def seconds(cls, value) -> float | None:
        """A duration in seconds, as Lightning reads it (a timedelta of the dict's units); None stays None."""
        if value is None:
            return None
        if isinstance(value, str):
            days, hours, minutes, secs = (int(x) for x in value.split(":"))
            value = {"days": days, "hours": hours, "minutes": minutes, "seconds": secs}
        if isinstance(value, Mapping):
            return datetime.timedelta(**{unit: float(x) for unit, x in value.items()}).total_seconds()
        return float(value)


class PathName(Kind):
    """A file or directory: a non-empty string, or a path object when code passes one."""

    expect = "a path (a non-empty string)"
    refuses = (" ", 3)

    @classmethod
    def accepts(cls, value) -> bool:
        import os

        return (isinstance(value, str) and value.strip() != "") or isinstance(value, os.PathLike)


class Devices(Kind):
    expect = "a number of devices ≥ 1, -1 or auto (all), a list of device indices [0,1], or a string '0,1'"
    refuses = (0, "two", [-1])

    @classmethod
    def accepts(cls, value) -> bool:
        if _is_int(value):
            return 1 <= value <= COUNT_MAX or value == -1
        if isinstance(value, str):
            return value == "auto" or bool(re.fullmatch(r"-1|\d+|(\d+\s*,\s*)+\d*", value.strip()))
        return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(x) and x >= 0 for x in value)


class RunName(Kind):
    expect = "a plain folder name: letters, digits, '.', '_', '-', '=', ',', '+' (no '/', not empty)"
    refuses = ("a/b", "..", "")

    @classmethod
    def accepts(cls, value) -> bool:
        text = str(value) if _is_int(value) or isinstance(value, str) else None
        return text is not None and bool(re.fullmatch(r"[\w.=,+-]+", text)) and text not in (".", "..")


class Tokenizer(Kind):
    """The name of a tiktoken encoding (tiktoken imports in milliseconds: no torch)."""

    refuses = ("gpt5",)

    @classmethod
    def names(cls) -> list[str]:
        import tiktoken

        return tiktoken.list_encoding_names()

    @classmethod
    def accepts(cls, value) -> bool:
        return isinstance(value, str) and value in cls.names()


# --- checking a value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_sequence(v) -> bool:
    """A list, a tuple, or another sequence that is not text (OmegaConf's ListConfig, when a config passes one)."""
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _members(tp) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


def _in_bounds(v, meta) -> bool:
    ge, gt, le, lt = (meta.get(b) for b in ("ge", "gt", "le", "lt"))
    return ((ge is None or v >= ge) and (gt is None or v > gt) and (le is None or v <= le)
            and (lt is None or v < lt))


def accepts(tp, meta: Mapping, value) -> bool:
    """Whether `value` (plain Python: dicts, lists, scalars) is a value of type `tp` within the bounds of `meta`.
    meta["lenient"]: a type this module cannot judge (another library's class) accepts anything."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(accepts(t, meta, value) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(value == c and type(value) is type(c) for c in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Kind):
        return tp.accepts(value)
    if is_declaration(tp):  # a group of keys: each is checked on its own
        return isinstance(value, Mapping)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value) and (value in meta.get("special", {}) or _in_bounds(value, meta))
    if tp is float:
        return _is_number(value) and _in_bounds(value, meta)
    if tp is str:
        return isinstance(value, str) and (value.strip() != "" or (meta.get("blank") and value != "")
                                           or meta.get("empty", False))
    if origin in (list, tuple):
        if not _is_sequence(value):
            return False
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[float, float]: exactly that many
            return len(value) == len(args) and all(accepts(t, meta, v) for t, v in zip(args, value, strict=True))
        item = args[0] if args else Any
        return ((bool(value) or meta.get("empty", False)) and all(accepts(item, meta, v) for v in value)
                and (not meta.get("increasing") or all(a < b for a, b in zip(value, value[1:], strict=False))))
    if origin is dict:
        _, item = typing.get_args(tp) or (str, Any)
        return isinstance(value, Mapping) and all(isinstance(k, str) and accepts(item, meta, v)
                                                  for k, v in value.items())
    if meta.get("lenient"):  # another library's class: a path is a string; other objects come as a _target_ node
        return isinstance(value, str) if _is_path(tp) else isinstance(value, Mapping)
    raise TypeError(f"no check for the declared type {tp!r}")  # a declaration this module cannot read: a bug


def _is_path(tp) -> bool:
    import os

    return isinstance(tp, type) and issubclass(tp, os.PathLike)


def expected(tp, meta: Mapping) -> str:
    """What a key of type `tp` with `meta` accepts, in words: `a whole number ≥ 1, or -1 for no limit`."""
    members = _members(tp)
    texts = [text for t in members if t is not type(None) and (text := _expected_one(t, meta))]
    return " or ".join(dict.fromkeys(texts or ["a config of an object"])) + (", or null" if type(None) in members
                                                                               else "")


def _bounds(meta, whole: bool) -> str:
    ge, gt, le, lt = (meta.get(b) for b in ("ge", "gt", "le", "lt"))
    if whole and le == COUNT_MAX and lt is None:
        return f" ≥ {ge if ge is not None else gt + 1} (below 2^31)"
    if whole and ge is not None and le is not None:
        return f" in {ge}..{le}"
    parts = [f"≥ {ge}"] * (ge is not None) + [f"> {gt}"] * (gt is not None)
    parts += [f"≤ {le}"] * (le is not None) + [f"< {lt}"] * (lt is not None)
    return " " + " and ".join(parts) if parts else ""


def _expected_one(tp, meta) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(c if isinstance(c, str) and c.isprintable() else repr(c)
                                     for c in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, Kind):
        return tp.expect if tp is not Tokenizer else "a tiktoken encoding: " + ", ".join(Tokenizer.names())
    if is_declaration(tp):
        return f"the keys of {tp.__name__}"
    if tp is bool:
        return "true or false"
    if tp is int:
        special = "".join(f", or {k} for {v}" for k, v in meta.get("special", {}).items())
        return f"a whole number{_bounds(meta, True)}{special}"
    if tp is float:
        return f"a number{_bounds(meta, False)}"
    if tp is str:
        return "a string" if meta.get("empty") else "a non-empty string"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        item = expected(args[0], meta) if args else "any value"
        if fixed:
            return f"a list of {len(args)} items, each {item}"
        size = "" if meta.get("empty") else "non-empty "
        return f"a {size}list, each item {item}" + (", increasing" if meta.get("increasing") else "")
    if origin is dict:
        return "a mapping of names to " + expected(typing.get_args(tp)[1], meta)
    if meta.get("lenient"):
        return "a path" if _is_path(tp) else None  # another library's class: said by the other members
    raise TypeError(f"no check for the declared type {tp!r}")


def signature_refusal(target, values: Mapping, key: str) -> Refused | None:
    """The first of `values` (the arguments a config node gives `target`, another library's class or function)
    that the type annotations of `target`'s signature refuse: that signature is the library's declaration of
    them. A type this module cannot judge accepts anything; ranges are the library's to check when it is built."""
    import inspect

    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
        params = inspect.signature(target).parameters
    except (TypeError, ValueError, NameError):  # no signature, or annotations that do not evaluate here
        return None
    meta = {"lenient": True, "empty": True, "blank": True}
    for name, value in values.items():
        if name in params and name in hints and not accepts(hints[name], meta, value):
            return Refused(f"{key}.{name}", value, f"{expected(hints[name], meta)} ("
                           f"{getattr(target, '__qualname__', target)}'s `{name}`)")
    return None


def refusal(tp, meta: Mapping, key: str, value) -> Refused | None:
    """The refusal of `value` for `key`, or None when it is accepted."""
    return None if accepts(tp, meta, value) else Refused(key, value, expected(tp, meta))


# --- reading declarations


def is_declaration(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def declared(cls) -> dict[str, dataclasses.Field]:
    """The declared keys of a declaration class (its fields made with key(); a subclass's own fields, such as a
    callback's clock, are not config keys), by name, with their annotations resolved into `field.type`."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        f.type = hints[f.name]
        out[f.name] = f
    return out


def check_fields(obj, prefix: str = "") -> None:
    """Check every declared field of the dataclass instance `obj`; the first refusal names `prefix` + field. Called
    by the declarations' __post_init__, so a value is checked when the object is made, from config or from code."""
    for name, f in declared(type(obj)).items():
        if is_declaration(f.type):
            continue  # a nested declaration checks itself when it is made
        value = getattr(obj, name)
        if f.metadata.get("open") or value is MISSING:
            continue
        if (refused := refusal(f.type, f.metadata, prefix + name, _plain(value))) is not None:
            raise refused


def check_values(cls, values: Mapping, prefix: str = "") -> None:
    """Check the keys of `values` that `cls` declares (the others belong to another library, which checks them)."""
    fields = declared(cls)
    for name, value in values.items():
        f = fields.get(name)
        if f is not None and (refused := refusal(f.type, f.metadata, prefix + name, _plain(value))) is not None:
            raise refused


def _plain(value):
    return list(value) if _is_sequence(value) else value


def default_of(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


# --- what Hydra composes into


def schema(cls, name: str | None = None) -> type:
    """The structured config Hydra composes a declaration into: the same keys and defaults, nested declarations
    nested, every leaf typed Any (gptlab checks the values, and says what it expected). `TARGET` (a ClassVar of
    the declaration) becomes the node's `_target_`: the class built from it. An open group is left as it comes."""
    fields = []
    target = getattr(cls, "TARGET", None)
    if target:
        fields.append(("_target_", Any, field(default=target)))
    for fname, f in declared(cls).items():
        if f.metadata.get("open"):
            fields.append((fname, Any, field(default=None)))
        elif is_declaration(f.type):
            sub = schema(f.type)
            fields.append((fname, sub, field(default_factory=sub)))
        else:
            default = default_of(f)
            if default is MISSING:
                default = "???"  # OmegaConf's mandatory value: the config must set it (validate says so)
            if isinstance(default, (tuple, list, dict)):
                copy = list(default) if isinstance(default, (tuple, list)) else dict(default)
                fields.append((fname, Any, field(default_factory=lambda d=copy: type(d)(d))))
            else:
                fields.append((fname, Any, field(default=default)))
    return dataclasses.make_dataclass(name or f"{cls.__name__}Schema", fields)


# --- documentation


def type_text(tp) -> str:
    """A declared type as a reader writes it: `int`, `gelu | relu2`, `int | fraction | null`."""
    out = []
    for t in _members(tp):
        origin = typing.get_origin(t)
        if t is type(None):
            out.append("null")
        elif origin is Literal:
            out.append(" | ".join(str(c) for c in typing.get_args(t)))
        elif origin in (list, tuple):
            args = typing.get_args(t)
            out.append(f"list[{type_text(args[0])}]" if args else "list")
        elif origin is dict:
            out.append("dict")
        elif isinstance(t, type) and issubclass(t, Kind):
            out.append(t.__name__.lower())
        else:
            out.append(getattr(t, "__name__", str(t)))
    return " | ".join(out)


def describe(cls, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) of every key `cls` declares, nested declarations flattened."""
    rows = []
    for fname, f in declared(cls).items():
        if is_declaration(f.type) and not f.metadata.get("open"):
            rows += describe(f.type, f"{prefix}{fname}.")
            continue
        if f.metadata.get("open"):
            rows += describe(f.type, f"{prefix}{fname}.") if is_declaration(f.type) else []
            continue
        default = default_of(f)
        shown = "(set by the config)" if default is MISSING else show(_plain(default))
        help_ = f.metadata.get("help", "")
        bounds = expected(f.type, f.metadata)
        rows.append((prefix + fname, type_text(f.type), shown, f"{help_} [{bounds}]" if help_ else f"[{bounds}]"))
    return rows
