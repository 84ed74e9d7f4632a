"""The check of a composed config before anything runs: train.py, eval.py and generate.py call `validate(cfg, app)`
first thing. Needs neither torch nor lightning.

1. Every declared key (gptlab/config/: the command's keys, paths, data, model, the Trainer keys gptlab acts on,
   gptlab's own components) against its declaration, in the order of their references, so that a key copying
   another (`scheduler.total_steps: ${trainer.max_steps}`) is reported under the key the user sets.
2. The rules between keys: of one group (made by building its declaration: GPTConfig, DataConfig) and of several
   (gptlab/config/run.py).
3. What the machine must provide that needs no torch: directories that exist or can be made, the W&B mode.

The values of other libraries' components (Lightning's callbacks and loggers, torch's optimizers, the Trainer's
other arguments) are checked by those libraries when train.py builds them, still before the data is loaded.
"""

from __future__ import annotations

import logging
import os
import re
import typing
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from gptlab.config import components
from gptlab.config.declare import Refused, declared, is_declaration, refusal
from gptlab.config.run import APPS
from gptlab.errors import GptlabError

log = logging.getLogger(__name__)
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")  # a value that is exactly another key: ${trainer.max_steps}
_REFERENCES = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")
HYDRA_KEYS = {"_target_": str, "_partial_": bool}  # a class (or function) path; whether to call it later


def validate(cfg: DictConfig, app: str) -> list[str]:
    """Check cfg (of app "train", "eval" or "generate"); raise GptlabError naming the first bad key, else return
    the warnings (also logged)."""
    declaration, rules = APPS[app]
    raw = dict(leaves(cfg))
    keys = dict(declared_keys(cfg, declaration))
    for key in sorted(keys, key=lambda k: _depth(k, raw, set())):
        parent, _, name = key.rpartition(".")
        if OmegaConf.is_missing(OmegaConf.select(cfg, parent) if parent else cfg, name):
            raise GptlabError(f"{key} is required: {keys[key].metadata.get('help', '')}")
        value = _value(cfg, key)
        if value is not _UNSET and (refused := refusal(keys[key].type, keys[key].metadata, key, value)):
            source = _source(key, raw)
            raise refused.under(source, f"; {key} takes its value" if source != key else "") from None
    for key in raw:  # Hydra's own keys of every node built by `_target_`
        kind = HYDRA_KEYS.get(key.rsplit(".", 1)[-1])
        if kind is not None and (refused := refusal(kind, {}, key, _value(cfg, key))):
            raise refused
    build_declared_nodes(cfg, declaration)
    warnings = rules(lambda k: _value(cfg, k, default=None))
    environment(cfg, app)
    for w in warnings:
        log.warning(w)
    return warnings


def declared_keys(cfg, declaration, prefix: str = ""):
    """(full key, field) of every declared key the config has: the command's own, its nested groups, the declared
    keys of an open group (the Trainer's), and those of gptlab's components, found by their `_target_`."""
    parent = OmegaConf.select(cfg, prefix[:-1]) if prefix else cfg
    for name, f in declared(declaration).items():
        if not isinstance(parent, DictConfig) or name not in parent:
            continue
        nested = _nested(f)
        node = parent._get_node(name)
        if nested is not None:
            if isinstance(node, DictConfig) and not node._is_none():
                yield from declared_keys(cfg, nested, f"{prefix}{name}.")
            else:
                yield prefix + name, f  # an optional group that is off (task=null), or not a group at all
        elif not f.metadata.get("open"):
            yield prefix + name, f
        elif isinstance(node, DictConfig) and not node._is_none():  # callbacks, logger, optimizer, scheduler
            for path, component, declared_by in _components(node, prefix + name):
                yield from ((f"{path}.{k}", field) for k, field in declared(declared_by).items() if k in component)


def _components(node, path):
    """(path, node, declaration) of gptlab's components in a group: the group itself (optimizer, scheduler) or
    its entries (callbacks.throughput, logger.wandb)."""
    candidates = [(path, node)] if "_target_" in node else [(f"{path}.{k}", node[k]) for k in node]
    for sub_path, sub in candidates:
        declaration = declaration_of(sub.get("_target_")) if isinstance(sub, DictConfig) else None
        if declaration is not None:
            yield sub_path, sub, declaration


def declaration_of(target) -> type | None:
    """The declaration of a gptlab component built by `_target_` (gptlab.training.callbacks.Throughput ->
    config.components.Throughput), or None for a class outside gptlab."""
    if not isinstance(target, str) or not target.startswith("gptlab."):
        return None
    found = getattr(components, target.rsplit(".", 1)[-1], None)
    return found if is_declaration(found) else None


def build_declared_nodes(cfg, declaration) -> None:
    """Build the declarations of the closed nodes (data, model, task): their __post_init__ holds the rules between
    their own keys (model.n_embd a multiple of model.n_head, ...)."""
    for name, f in declared(declaration).items():
        nested = _nested(f)
        node = _value(cfg, name, default=None)
        if nested is not None and not f.metadata.get("open") and isinstance(node, dict):
            nested(**{k: v for k, v in node.items() if k in declared(nested)})


def _nested(f):
    """The declaration a field holds, for a group of keys (`data: DataConfig`, `task: Task | None`), else None."""
    return next((t for t in typing.get_args(f.type) or (f.type,) if is_declaration(t)), None)


# --- reading the config


def leaves(cfg: DictConfig, prefix: str = ""):
    """(dotted key, raw value) of every leaf; a list is one leaf."""
    for key in cfg.keys():
        full = f"{prefix}{key}"
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_interpolation() and not node._is_none():
            yield from leaves(node, full + ".")
        else:
            yield full, node._value() if not isinstance(node, (DictConfig, ListConfig)) else node


_UNSET = object()


def _value(cfg, key, default=_UNSET):
    """The resolved value of `key` as plain Python; `default` when absent. _UNSET for a value that needs Hydra's
    runtime (`${hydra:...}`) outside a Hydra app: a library caller's config, nothing the user could have set."""
    from hydra.core.hydra_config import HydraConfig

    try:
        value = OmegaConf.select(cfg, key, default=default)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    except InterpolationResolutionError:
        if HydraConfig.initialized():
            raise
        return _UNSET


def _depth(key, raw, seen) -> int:
    """How many references lead from `key` to a plain value: 0 for a plain value."""
    refs = _REFERENCES.findall(raw[key]) if isinstance(raw.get(key), str) else []
    refs = [r for r in refs if r in raw and r not in seen]
    return 1 + max((_depth(r, raw, seen | {key}) for r in refs), default=-1) if refs else 0


def _source(key, raw) -> str:
    """The key a value comes from when it is a plain reference (${trainer.max_steps}), else the key itself."""
    seen = {key}
    while isinstance(raw.get(key), str) and (m := _REFERENCE.match(raw[key])) and m.group(1) not in seen:
        key = m.group(1)
        seen.add(key)
    return key


# --- the machine, without torch


_OUTPUT_FILES = ("path", "report", "csv")  # output keys that name a file; the others name a directory
_OUTPUT_KEYS = ("dirpath", "save_dir", "out_dir", "out", "default_root_dir", *_OUTPUT_FILES)


def environment(cfg: DictConfig, app: str) -> None:
    """Input directories that are directories, output locations that can be made, the W&B mode."""
    for key in ("data.data_dir", "data.cache_dir", "paths.data_dir", "paths.cache_dir"):
        value = _value(cfg, key, default=None)
        if isinstance(value, str) and value and Path(value).expanduser().is_file():
            raise GptlabError(f"{key}={value} is a file: expected a directory (the one that holds wikitext-2/)")
    for key, _ in leaves(cfg):
        if key.rsplit(".", 1)[-1] in _OUTPUT_KEYS and key != "paths.output_dir":
            value = _value(cfg, key)
            if value == "":  # some libraries read "" as the working directory: never where a run should write
                raise GptlabError(f"{key}='': expected a directory or file to write to, or null for the default")
            if isinstance(value, str):
                _check_creatable(key, value)
    if app == "train" and "wandb" in (_value(cfg, "logger", default=None) or {}):
        mode = os.environ.get("WANDB_MODE")
        if mode is not None and mode not in WANDB_MODES:
            raise GptlabError(f"WANDB_MODE={mode} (environment): expected one of {', '.join(WANDB_MODES)}, or unset")


def _check_creatable(key: str, value: str) -> None:
    """A directory or file that will be written: its nearest existing ancestor is a writable directory."""
    path = Path(value).expanduser().absolute()
    is_file = key.rsplit(".", 1)[-1] in _OUTPUT_FILES
    if is_file and path.is_dir():
        raise GptlabError(f"{key}={value} is a directory: expected a file to write")
    parent = path.parent if is_file else path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GptlabError(f"{key}={value}: cannot be created, {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise GptlabError(f"{key}={value}: cannot be created, {parent} is not writable")


__all__ = ["validate", "leaves", "declared_keys", "declaration_of", "Refused"]
