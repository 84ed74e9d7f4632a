"""The contract of every gptlab command: a user's mistake is one line `error: ...` on stderr and exit code 2, never
a traceback; a bug keeps its traceback.

The entry points wrap their `@hydra.main` function:

    @clear_errors
    @hydra.main(version_base=None, config_path="conf", config_name="train")
    def main(cfg): ...

One rule decides, by the type of the exception, never by its text: a user's mistake is a `GptlabError` (gptlab
raises it wherever it checks the user's input, and when another library refused what the config gave it: see
`refused_by`), or one of the config errors of Hydra and OmegaConf (an unknown key gets a "did you mean"). Every
other exception is a bug. HYDRA_FULL_ERROR=1 shows the traceback of every error.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import sys
from pathlib import Path

from gptlab.errors import GptlabError

EXIT_CODE = 2
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


def format_error(message: str) -> str:
    """`error: <first line>`, later lines (details, hints) indented under it."""
    lines = [line.rstrip() for line in str(message).strip().splitlines() if line.strip()] or ["(no message)"]
    return "\n".join([f"error: {lines[0]}", *(f"  {line.strip()}" for line in lines[1:])])


def describe(exc: BaseException) -> str | None:
    """The message to show for a user's mistake, or None for a bug (it keeps its traceback)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, GptlabError):
        return str(exc)
    if isinstance(exc, OmegaConfBaseException) and (inner := _cause(exc, GptlabError)) is not None:
        return str(inner)  # raised inside one of gptlab's resolvers (a run name, a run directory)
    if isinstance(exc, ConfigCompositionException) and isinstance(exc.__cause__, (ConfigKeyError,
                                                                                   ConfigAttributeError)):
        return _unknown_key(exc.__cause__) or _first_lines(exc)
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
    if isinstance(exc, OmegaConfBaseException):  # an interpolation that does not resolve, a missing value
        key = getattr(exc, "full_key", None)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{msg} (config key: {key})" if key and key not in msg else msg
    if isinstance(exc, _lightning_config_error()):  # a setting Lightning refused while it ran (monitor=val_lss)
        return str(exc)
    if isinstance(exc, OSError) and _raised_in(exc, "hydra", "run_job") and exc.filename:
        return f"cannot create the run directory {exc.filename}: {exc.strerror} (hydra.run.dir)"
    return None


def _lightning_config_error() -> tuple:
    """Lightning's MisconfigurationException, when Lightning is loaded (none can have been raised otherwise)."""
    module = sys.modules.get("lightning.fabric.utilities.exceptions")
    return (module.MisconfigurationException,) if module is not None else ()


def _cause(exc, kind):
    while exc is not None and not isinstance(exc, kind):
        exc = exc.__cause__ or exc.__context__
    return exc


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
    """Hydra's "Could not find 'model/gpt_nanoo'" and its list of the options there are, on one line."""
    options = getattr(exc, "options", None) or []
    missing = getattr(exc, "missing_cfg_file", None) or ""
    head = f"Could not find '{missing}'" if missing else _first_lines(exc)
    return f"{head}; available: {', '.join(sorted(options))}" if options else head


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


def command(name: str, task):
    """`task(cfg)` as a Hydra app of conf/<name>.yaml, with the contract above: every command (train.py, eval.py,
    generate.py, `python -m gptlab.apps.<name>`, the console scripts of gptlab/apps/commands.py)."""
    import hydra

    from gptlab.config.compose import setup

    setup()

    def main(cfg):
        with refused_runs_leave_nothing():
            return task(cfg)

    return clear_errors(hydra.main(version_base=None, config_path=str(CONF), config_name=name)(main))


CONF = Path(__file__).resolve().parent.parent / "conf"  # gptlab/conf: the repository's conf/ (a link) or packaged


# --- a refused run leaves nothing




@contextlib.contextmanager
def refused_runs_leave_nothing():
    """Around a command's task function (inside `@hydra.main`, where Hydra's config is set): a single run refused
    for its input, before it wrote anything, leaves no directory: what Hydra wrote before gptlab ran (the config
    and the log) goes. A multirun keeps its failed jobs' directories: the sweep summary lists them."""
    try:
        yield
    except Exception as e:
        if describe(e) is not None:
            _discard_refused_run()
        raise


def _discard_refused_run() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gptlab.config.rundir import STARTED, discard_refused_run

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None, throw_on_missing=False)
    if not output_dir:
        return
    root = logging.getLogger()
    for handler in root.handlers[:]:  # Hydra's log file in that directory: closed, and no longer written to
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(
                Path(output_dir).absolute()):
            root.removeHandler(handler)
            handler.close()
    discard_refused_run(output_dir, STARTED)  # only what was written since this process started


@contextlib.contextmanager
def refused_by(key: str, library_errors=(ValueError, TypeError)):
    """Around building an object from the config node `key` with another library's class: the exceptions it
    raises for the values it was given (`library_errors`: ValueError, TypeError, and the library's own
    configuration errors) become one line naming the node. Anything else stays a bug."""
    from hydra.errors import InstantiationException

    try:
        yield
    except GptlabError:
        raise
    except (InstantiationException, *library_errors) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ is not None else e
        if isinstance(cause, GptlabError):  # gptlab's own class refused a value: its message names the key
            raise cause from e
        if not isinstance(cause, (InstantiationException, ImportError, *library_errors)):
            raise
        text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise GptlabError(f"{key}: {text}") from e
