"""The kinds of value a config key can accept (keys.py says which key takes which). A rule checks one value and
says, when it refuses it, what it expected (`a whole number ≥ 1`); validate.py puts the user's key and value in
front: `trainer.max_steps=0: expected a whole number ≥ 1, or -1 for no limit`."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\d{1,2}:\d{1,2}:\d{1,2}:\d{1,2}$")  # Lightning's DD:HH:MM:SS
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "bf16", "16-mixed", "16-true", "16", "64-true",
              "64", "transformer-engine", "transformer-engine-float16")


COUNT_MAX = 2**31 - 1  # sizes and counts past this mean nothing here (and overflow int32 indexing)


class Refused(ValueError):
    """A value a rule does not accept; the message says what it expected."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Rule:
    expect = "?"

    def __init__(self, null: bool = False):
        self.null = null

    def check(self, v) -> None:
        if v is None:
            if not self.null:
                raise Refused(self.expect)
            return
        if not self.accepts(v):
            raise Refused(self.expect + (", or null" if self.null else ""))

    def accepts(self, v) -> bool:
        raise NotImplementedError


class Any(Rule):
    """Any value: the key is passed on as is (a class path, a Lightning object's own config)."""

    expect = "any value"

    def __init__(self):
        super().__init__(null=True)

    def accepts(self, v) -> bool:
        return True


class Unchecked(Any):
    """A key that no rule names (a Lightning argument or a callback added with +trainer.profiler=simple): passed
    on unchecked; the object built from it checks it. The shipped configs have a rule for every key (a test)."""


class Int(Rule):
    """A whole number in [lo, hi]; `special` values outside it are allowed too (-1: no limit)."""

    def __init__(self, lo=None, hi=None, null=False, special=None):
        super().__init__(null)
        self.lo, self.hi, self.special = lo, hi, special or {}
        bound = (f" ≥ {lo}" if hi is None else f" ≥ {lo} (below 2^31)" if hi == COUNT_MAX else f" in {lo}..{hi}"
                 ) if lo is not None else ""
        extra = "".join(f", or {k} for {v}" for k, v in self.special.items())
        self.expect = f"a whole number{bound}{extra}"

    def accepts(self, v) -> bool:
        if not _is_int(v):
            return False
        if v in self.special:
            return True
        return (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)


class Num(Rule):
    """A number in the interval lo..hi; `above`: strictly greater than lo."""

    def __init__(self, lo=None, hi=None, above=False, null=False):
        super().__init__(null)
        self.lo, self.hi, self.above = lo, hi, above
        parts = []
        if lo is not None:
            parts.append(f"{'>' if above else '≥'} {lo}")
        if hi is not None:
            parts.append(f"≤ {hi}")
        self.expect = "a number" + (" " + " and ".join(parts) if parts else "")

    def accepts(self, v) -> bool:
        if not _is_num(v) or v != v or v in (float("inf"), float("-inf")):
            return False
        if self.lo is not None and (v <= self.lo if self.above else v < self.lo):
            return False
        return self.hi is None or v <= self.hi


class Bool(Rule):
    expect = "true or false"

    def accepts(self, v) -> bool:
        return isinstance(v, bool)


class Choice(Rule):
    def __init__(self, *choices, null=False):
        super().__init__(null)
        self.choices = choices
        self.expect = "one of " + ", ".join(c if isinstance(c, str) and c.isprintable() else repr(c)
                                            for c in choices)

    def accepts(self, v) -> bool:
        return any(v == c and type(v) is type(c) for c in self.choices)


class Text(Rule):
    """A non-empty string (a name, a path, a template); `blank`: white space alone counts (a stop string "\\n")."""

    expect = "a non-empty string"

    def __init__(self, null=False, blank=False):
        super().__init__(null)
        self.blank = blank

    def accepts(self, v) -> bool:
        return isinstance(v, str) and (v if self.blank else v.strip()) != ""


class AnyText(Rule):
    """Any string, the empty one included (a CSV logger's version "": no version subfolder)."""

    expect = "a string"

    def accepts(self, v) -> bool:
        return isinstance(v, str)


class List(Rule):
    """A list whose items each pass `item`; `length`: exactly that many; `increasing`: strictly."""

    def __init__(self, item: Rule, length=None, increasing=False, empty=False, null=False):
        super().__init__(null)
        self.item, self.length, self.increasing, self.empty = item, length, increasing, empty
        size = f"{length} " if length else ("" if empty else "non-empty ")
        order = ", increasing" if increasing else ""
        self.expect = f"a {size}list, each item {item.expect}{order}"

    def accepts(self, v) -> bool:
        if not isinstance(v, (list, tuple)) or (self.length and len(v) != self.length) or (not v and not self.empty):
            return False
        try:
            for x in v:
                self.item.check(x)
        except Refused:
            return False
        return not self.increasing or all(a < b for a, b in zip(v, v[1:], strict=False))


class Either(Rule):
    """One of several rules (a number of batches or a fraction of them)."""

    def __init__(self, *rules, null=False):
        super().__init__(null)
        self.rules = rules
        self.expect = " or ".join(r.expect for r in rules)

    def accepts(self, v) -> bool:
        for r in self.rules:
            try:
                r.check(v)
                return True
            except Refused:
                pass
        return False


class Fraction(Num):
    """A float in (0, 1]: a share of something."""

    def __init__(self, null=False):
        super().__init__(0, 1, above=True, null=null)
        self.expect = "a fraction in (0, 1] written with a point (0.5, 1.0)"

    def accepts(self, v) -> bool:
        return isinstance(v, float) and super().accepts(v)


class Duration(Rule):
    expect = ("a duration DD:HH:MM:SS (00:00:10:00 is ten minutes) or a dict such as {minutes: 10}")

    def accepts(self, v) -> bool:
        if isinstance(v, str):
            return bool(_DURATION.match(v))
        if isinstance(v, dict):
            keys = {"days", "hours", "minutes", "seconds", "milliseconds", "microseconds", "weeks"}
            return bool(v) and set(v) <= keys and all(_is_num(x) and x >= 0 for x in v.values())
        return False


class Devices(Rule):
    expect = "a number of devices ≥ 1, -1 or auto (all), a list of device indices [0,1], or a string '0,1'"

    def accepts(self, v) -> bool:
        if _is_int(v):
            return 1 <= v <= COUNT_MAX or v == -1
        if isinstance(v, str):
            return v == "auto" or bool(re.fullmatch(r"-1|\d+|(\d+\s*,\s*)+\d*", v.strip()))
        return isinstance(v, (list, tuple)) and bool(v) and all(_is_int(x) and x >= 0 for x in v)


class RunName(Text):
    expect = "a plain folder name: letters, digits, '.', '_', '-', '=', ',', '+' (no '/', not empty)"

    def accepts(self, v) -> bool:
        return isinstance(v, (str, int)) and bool(re.fullmatch(r"[\w.=,+-]+", str(v))) and str(v) not in (".", "..")


class Off(Any):
    """A component that can be switched off: null (its config, when given, is checked key by key)."""

    expect = "null, or the component's config"


class Tokenizer(Text):
    """The name of a tiktoken encoding."""

    def accepts(self, v) -> bool:
        import tiktoken

        self.expect = "a tiktoken encoding: " + ", ".join(tiktoken.list_encoding_names())
        return isinstance(v, str) and v in tiktoken.list_encoding_names()
