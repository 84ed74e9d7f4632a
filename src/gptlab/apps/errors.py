"""Clear errors: bad input gets one line `error: ...` on stderr and exit code 2, not a traceback.

The entry points wrap their `@hydra.main` function:

    @clear_errors
    @hydra.main(version_base=None, config_path="conf", config_name="train")
    def main(cfg): ...

One rule decides: a user's mistake is a `GptlabError` (gptlab raises it wherever it checks the user's input), or
one of the config errors of Hydra and OmegaConf (an unknown override key gets a "did you mean"), or Lightning's
MisconfigurationException, or a ValueError/TypeError with which a constructor outside gptlab (torch.optim,
lightning.Trainer, ...) refused the values a config gave it. Those print one line. Every other exception is a bug
and keeps its traceback. HYDRA_FULL_ERROR=1 shows the traceback of every error.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import logging
import os
import re
import sys
import time
import types
import typing

from gptlab.errors import GptlabError

EXIT_CODE = 2
# a TypeError raised by Python itself when a config's keys do not fit its target's signature
_SIGNATURE_MISMATCH = re.compile(r"got an unexpected keyword argument|missing \d+ required (positional|keyword)")
_OURS = "GPTLAB_SET_HYDRA_FULL_ERROR"  # marks HYDRA_FULL_ERROR as set by clear_errors, not by the user


def clear_errors(main):
    """Decorator for an entry point, outside `@hydra.main`: see the module docstring."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_OURS) != "1":
            return main(*args, **kwargs)  # the user asked for full tracebacks
        # Hydra prints its own multi-line report of an error and exits 1, unless HYDRA_FULL_ERROR is set: then it
        # raises, and the error comes here. Child processes (DDP) inherit both variables and behave the same.
        saved = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _OURS)}
        os.environ["HYDRA_FULL_ERROR"] = os.environ[_OURS] = "1"
        stderr, sys.stderr = sys.stderr, _WithoutHydraJobLine(sys.stderr)
        try:
            return main(*args, **kwargs)
        except Exception as e:
            message = describe(e)
            if message is None:
                raise
            print(format_error(message), file=stderr, flush=True)
            sys.exit(EXIT_CODE)
        finally:
            sys.stderr = stderr
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return wrapper


_STARTED = time.time()  # files older than this were not written by this process


@contextlib.contextmanager
def refused_runs_leave_nothing():
    """Around the checks a task function makes before it writes anything: when they refuse the input, a single
    run's directory goes too (what Hydra wrote before gptlab ran: the config and the log). A multirun keeps its
    failed jobs' directories: the sweep summary lists them."""
    try:
        yield
    except Exception as e:
        if describe(e) is not None:
            _discard_refused_run(_STARTED)
        raise


def _discard_refused_run(started: float) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gptlab.apps.resume import discard_refused_run

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False)
    if output_dir:
        logging.shutdown()  # close Hydra's log file first
        discard_refused_run(output_dir, started)  # only what was written since `started`


class _WithoutHydraJobLine:
    """sys.stderr without the line Hydra writes before re-raising a failed job's error ("Error executing job with
    overrides: [...]"): the error is reported in one line of its own."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text.startswith("Error executing job with overrides:"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def format_error(message: str) -> str:
    """`error: <first line>`, later lines (details, hints) indented under it."""
    lines = [line.rstrip() for line in str(message).strip().splitlines() if line.strip()] or ["(no message)"]
    return "\n".join([f"error: {lines[0]}", *(f"  {line.strip()}" for line in lines[1:])])


def describe(exc: BaseException) -> str | None:
    """The message to show for a known kind of error, or None for an unexpected one (keep its traceback)."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(exc, GptlabError):
        return str(exc)
    if isinstance(exc, OmegaConfBaseException):  # raised by one of gptlab's resolvers (a run name, a run directory)
        prefix = "GptlabError raised while resolving interpolation: "
        inner = exc
        while inner is not None and not isinstance(inner, GptlabError):
            inner = inner.__cause__ or inner.__context__
        if inner is not None:
            return str(inner)
        if str(exc).startswith(prefix):
            return str(exc)[len(prefix):].splitlines()[0]
    if isinstance(exc, InstantiationException):
        if str(exc).startswith("Error locating target"):  # a `_target_` that does not exist
            return str(exc).splitlines()[0].replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception", "")
        cause = exc.__cause__
        message = describe(cause) if cause is not None else None
        target = re.match(r"Error in call to target '([^']+)'", str(exc))
        if message is None and isinstance(cause, (ValueError, TypeError)) and target and \
                not target.group(1).startswith("gptlab."):
            message = str(cause)  # a constructor outside gptlab refused the values it was given from the config
        if message is None and isinstance(cause, TypeError) and _SIGNATURE_MISMATCH.search(str(cause)):
            message = str(cause)  # a config key that the target does not take (+model.foo=1), or one it lacks
        return message
    if isinstance(exc, ConfigCompositionException) and isinstance(exc.__cause__, (ConfigKeyError,
                                                                                   ConfigAttributeError)):
        return _unknown_key(exc.__cause__) or _first_lines(exc)
    if isinstance(exc, ConfigCompositionException) and isinstance(exc.__cause__, ValidationError):
        return _wrong_type(exc)
    if isinstance(exc, MissingConfigException):
        return _missing_config(exc)
    if isinstance(exc, OverrideParseException) and getattr(exc, "override", None):
        hint = ""
        if not exc.override.isascii():  # Hydra's grammar takes unquoted ASCII only
            key, _, value = exc.override.partition("=")
            hint = f"; quote a value with other characters: \"{key}='{value}'\""
        return f"cannot parse the override {exc.override!r}: {exc.message.splitlines()[0]}{hint}"
    if isinstance(exc, (ConfigCompositionException, OverrideParseException)):
        return _first_lines(exc)
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{msg} (config key: {key})" if key and key not in msg else msg
    if isinstance(exc, MisconfigurationException):
        return str(exc)
    if isinstance(exc, OSError) and _raised_in(exc, "hydra", "run_job") and exc.filename:
        return f"cannot create the run directory {exc.filename}: {exc.strerror} (hydra.run.dir)"
    return None


def _raised_in(exc, package: str, function: str) -> bool:
    """Whether `exc` was raised inside `function` of `package` itself (the deepest frame of that package)."""
    tb, hit = exc.__traceback__, False
    while tb is not None:
        code = tb.tb_frame.f_code
        if f"{os.sep}{package}{os.sep}" in code.co_filename:
            hit = code.co_name == function
        elif "gptlab" in code.co_filename:
            hit = False
        tb = tb.tb_next
    return hit


_TYPE_NAMES = {"Integer": "a whole number", "Float": "a number", "String": "a string"}


def _wrong_type(exc) -> str:
    """`data.batch_size=1.5: expected a whole number` for a value Hydra's schema (schema.py) refused."""
    cause = exc.__cause__
    key = getattr(cause, "full_key", None) or "?"
    override = str(exc).splitlines()[0].removeprefix("Error merging override ").strip()
    value = override.partition("=")[2] if override.partition("=")[0].lstrip("+~") == key else None
    kind = re.search(r"could not be converted to (\w+)", str(cause))  # booleans are left to keys.py
    expected = _TYPE_NAMES.get(kind.group(1), kind.group(1)) if kind else str(cause).splitlines()[0]
    if "is not a ListConfig" in str(cause):
        expected = "a list, e.g. [a,b]"
    elif "is not a subclass of" in str(cause) or "Invalid type assigned" in str(cause):
        expected = "a single value, not a group of keys"
    return f"{key}={value}: expected {expected}" if value is not None else f"{key}: {expected}"


def _first_lines(exc) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _unknown_key(err) -> str | None:
    """`unknown config key 'trainer.max_step' (did you mean trainer.max_steps?)` for a ConfigKeyError."""
    key = getattr(err, "full_key", None)
    if not key:
        return None
    parent = getattr(err, "parent_node", None)
    known = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else f"to add a new key, write +{key}=..."
    return f"unknown config key '{key}' ({hint})"


def _missing_config(exc) -> str:
    """Hydra's "Could not find 'model/gpt_nanoo'" plus its list of available options, on one line."""
    text = str(exc).split("Config search path:")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0].split("': ", 1)[-1] if lines else "config not found"  # drop "In 'train': "
    options = [line for line in lines[1:] if not line.lower().startswith("available options")]
    return f"{head}; available: {', '.join(options)}" if options else head


# --- overrides with a value of the wrong type

_NUMBER = (int, float)


def check_override_types() -> None:
    """Refuse a command-line override that gives a string where the key's default is a number, a boolean or a
    list (`trainer.max_steps=ten`), unless the object built from that config accepts a string there (Lightning's
    `trainer.devices=auto`). Call it inside the Hydra app, before building anything: a clear line instead of a
    TypeError from deep inside a constructor."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    choices = set(hc.runtime.choices)
    suspects = [o for o in overrides
                if o.type in (OverrideType.CHANGE, OverrideType.FORCE_ADD) and not o.is_sweep_override()
                and o.key_or_group not in choices and isinstance(o.value(), str) and "${" not in o.value()]
    if not suspects:
        return
    # the defaults, with the same config groups chosen as on the command line
    base = compose(hc.job.config_name, overrides=[o.input_line for o in overrides if o.key_or_group in choices])
    for o in suspects:
        key = o.key_or_group
        try:
            default = OmegaConf.select(base, key, throw_on_missing=False)
        except Exception:  # an interpolation that only resolves in the full app: nothing to compare with
            continue
        if isinstance(default, bool):
            expected = "true or false"
        elif isinstance(default, _NUMBER):
            expected = "a number"
        elif OmegaConf.is_list(default):
            expected = "a list, e.g. [a,b]"
        else:
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
        if _target_accepts_string(parent, name):
            continue
        shown = OmegaConf.to_container(default) if OmegaConf.is_list(default) else default
        raise GptlabError(f"{key}={o.value()}: expected {expected} (default: {shown}), got the string "
                          f"{o.value()!r}")


def _target_accepts_string(node, name: str) -> bool:
    """Whether the `_target_` of config `node` declares parameter `name` as able to take a string. Unknown
    (no target, no annotation): False, and the default's type decides."""
    from hydra.utils import get_object

    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        return False
    try:
        obj = get_object(target)
        try:
            params = inspect.signature(obj, eval_str=True).parameters
        except Exception:  # an annotation that does not evaluate
            params = inspect.signature(obj).parameters
    except Exception:
        return False
    param = params.get(name)
    return param is not None and _accepts_string(param.annotation)


def _accepts_string(ann) -> bool:
    if ann is inspect.Parameter.empty:
        return False
    if ann is str or ann is typing.Any:
        return True
    if isinstance(ann, str):  # unevaluated annotation text
        return "str" in ann or "Any" in ann
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return any(isinstance(a, str) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_string(a) for a in typing.get_args(ann))
    return False
